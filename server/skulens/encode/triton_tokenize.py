"""Triton python-backend model `tokenize`: titles -> token ids and attention mask, the first step of
the `text_pipeline` ensemble (model_repo.write_text_pipeline), so a client can send text to Triton.
The same `tokenizers` file and settings as skulens' TextEncoder (truncation to `max_tokens`,
padding to the longest in the request); imports nothing of skulens."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        p = {k: v["string_value"] for k, v in json.loads(args["model_config"]).get("parameters", {}).items()}
        self.tok = Tokenizer.from_file(os.path.join(os.path.dirname(__file__), "tokenizer.json"))
        self.tok.enable_truncation(int(p.get("max_tokens", "128")))
        self.tok.enable_padding()

    def execute(self, requests):
        out = []
        for r in requests:
            texts = [bytes(t).decode("utf-8", "replace") for t in
                     pb_utils.get_input_tensor_by_name(r, "text").as_numpy().reshape(-1)]
            enc = self.tok.encode_batch(texts)
            ids = np.asarray([e.ids for e in enc], np.int64)
            mask = np.asarray([e.attention_mask for e in enc], np.int64)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("input_ids", ids),
                                                                  pb_utils.Tensor("attention_mask", mask)]))
        return out
