"""Triton python-backend model: runs the `model.onnx` beside it with ONNX Runtime.

`skulens.encode.triton.prepare_repository` copies this file in as `<model>/1/model.py` for Triton
builds that have only the python backend (PyPI's nvidia-pytriton); a full Triton serves the
same `model.onnx` with its own onnxruntime backend from the exported `config.pbtxt`. Runs inside
Triton's Python stub: it imports only numpy, onnxruntime and Triton's utilities, never skulens.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        threads = int(config.get("parameters", {}).get("intra_op_threads", {}).get("string_value", "0"))
        if threads:
            opts.intra_op_num_threads = threads
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        # BERT-style graphs may also take token_type_ids, which the config leaves out: zeros.
        self.zeros = [i.name for i in self.session.get_inputs() if i.name not in self.inputs]

    def execute(self, requests):
        # Requests whose inputs have the same shapes (every image request; text of one length)
        # run as one batch: that is what Triton's dynamic batcher queued them for.
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        groups = {}
        for i, f in enumerate(feeds):
            groups.setdefault(tuple(f[n].shape[1:] for n in self.inputs), []).append(i)
        responses = [None] * len(requests)
        for members in groups.values():
            sizes = [len(feeds[i][self.inputs[0]]) for i in members]
            batch = {n: np.concatenate([feeds[i][n] for i in members]) for n in self.inputs}
            batch.update({n: np.zeros_like(batch[self.inputs[0]]) for n in self.zeros})
            outs = self.session.run(self.outputs, batch)
            start = 0
            for i, size in zip(members, sizes):
                tensors = [pb_utils.Tensor(name, out[start:start + size]) for name, out in zip(self.outputs, outs)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses
