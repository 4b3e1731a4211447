"""Small but real ONNX encoders built with onnx.helper (no torch needed), in the
same model-repository layout training/export_pretrained.py writes. They run in
the real ONNX Runtime, so decode, preprocess, sessions and caches are exercised;
only the network is small: 8x8 average pooling of the image, then a fixed
random projection and L2 normalisation."""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from skulens.encode import model_repo

SIZE = 64


def tiny_image_encoder(repo: str, dim: int = 16, seed: int = 0) -> str:
    folder = os.path.join(repo, "image_encoder")
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    w = np.random.default_rng(seed).standard_normal((3 * 8 * 8, dim)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["pixels"], ["pooled"], kernel_shape=[SIZE // 8] * 2, strides=[SIZE // 8] * 2),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["z"]),
        helper.make_node("ReduceL2", ["z"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Div", ["z", "norm"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_image_encoder",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(folder, "1", "model.onnx"))
    model_repo.write(folder, {"name": "tiny-avgpool-proj", "dim": dim, "input_size": SIZE,
                              "mean": [127.5] * 3, "std": [127.5] * 3},
                     model_repo.image_config(SIZE, dim, queue_delay_us=2000))
    return folder


def tiny_text_encoder(repo: str, words: list[str], dim: int = 12, seed: int = 0) -> str:
    """A word-level tokenizer (tokenizers) and an ONNX bag-of-words model: embedding
    lookup, mean over the attention mask, L2 norm; the same inputs as MiniLM's export."""
    from tokenizers import Tokenizer, models, pre_tokenizers, normalizers
    folder = os.path.join(repo, "text_encoder")
    os.makedirs(os.path.join(folder, "1"), exist_ok=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "1", "tokenizer.json"))
    table = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32)
    table[0] = 0
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["h"]),
        helper.make_node("Cast", ["attention_mask"], ["m0"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m0", "axis2"], ["m"]),
        helper.make_node("Mul", ["h", "m"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["z"], keepdims=0),
        helper.make_node("ReduceL2", ["z"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["norm", "eps"], ["safe"]),
        helper.make_node("Div", ["z", "safe"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "axis2"),
         numpy_helper.from_array(np.array([1], np.int64), "axis1"),
         numpy_helper.from_array(np.array([1e-12], np.float32), "eps")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, os.path.join(folder, "1", "model.onnx"))
    model_repo.write(folder, {"name": "tiny-bag-of-words", "dim": dim, "max_tokens": 32}, model_repo.text_config(dim))
    return folder
