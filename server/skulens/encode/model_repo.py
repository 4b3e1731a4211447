"""The model folder format, read and written here and nowhere else.

A model repository holds one folder per model, as Triton lays it out:

    <repo>/image_encoder/config.pbtxt    Triton's model configuration
    <repo>/image_encoder/skulens.json    what skulens needs to use it: name, dim, input size,
                                         normalisation, provenance (training run, checks)
    <repo>/image_encoder/1/model.onnx    the network (version 1)
    <repo>/text_encoder/...              the same, plus 1/tokenizer.json
    <repo>/preprocess/, image_pipeline/  the ensemble a stock Triton serves: image bytes ->
                                         preprocess (python backend) -> image_encoder -> embedding
    <repo>/tokenize/, text_pipeline/     and text -> tokenize (python backend) -> text_encoder

`skulens-train export` and `training/export_pretrained.py` write models through
`staged()` + `write()`; the encoders and the Triton launcher read them with
`read_meta()` / `read_config()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil

IMAGE, TEXT = "image_encoder", "text_encoder"
MODELS = (IMAGE, TEXT)
PREPROCESS, IMAGE_PIPELINE = "preprocess", "image_pipeline"   # the ensemble: image bytes -> embedding
TOKENIZE, TEXT_PIPELINE = "tokenize", "text_pipeline"         # and: text -> embedding
META, CONFIG, VERSION = "skulens.json", "config.pbtxt", "1"


def _io(name: str, dim: int, size: int = 0) -> str:
    """The inputs and output of an encoder: pixels [3, S, S] or token ids + mask [T] -> [dim]."""
    if name == IMAGE:
        inputs = f'input [ {{ name: "pixels" data_type: TYPE_FP32 dims: [ 3, {size}, {size} ] }} ]\n'
    else:
        inputs = ('input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },\n'
                  '        { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n')
    return inputs + f'output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ {dim} ] }} ]\n'


def image_config(size: int, dim: int, max_batch: int = 64, queue_delay_us: int = 500) -> str:
    """Triton's configuration of an image encoder: normalised pixels [B, 3, S, S] -> [B, dim]."""
    return (f'name: "{IMAGE}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch}\n' + _io(IMAGE, dim, size)
            + f'dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n'
            'instance_group [ { kind: KIND_CPU count: 1 } ]\n')


def text_config(dim: int, max_batch: int = 64) -> str:
    """Triton's configuration of a text encoder: token ids + attention mask [B, T] -> [B, dim]."""
    return (f'name: "{TEXT}"\nbackend: "onnxruntime"\nmax_batch_size: {max_batch}\n' + _io(TEXT, dim)
            + 'instance_group [ { kind: KIND_CPU count: 1 } ]\n')


def tensorrt_config(name: str, meta: dict, max_batch: int = 64, preferred=(8, 32, 64), instances: int = 1,
                    queue_delay_us: int = 200) -> str:
    """A TensorRT engine's folder for Triton (`1/model.plan`): the same inputs and output, dynamic
    batching towards the engine profile's sizes, `instances` copies per GPU."""
    return (f'name: "{name}"\nplatform: "tensorrt_plan"\nmax_batch_size: {max_batch}\n'
            + _io(name, int(meta["dim"]), int(meta.get("input_size", 0)))
            + f'dynamic_batching {{ preferred_batch_size: [ {", ".join(map(str, preferred))} ] '
            f'max_queue_delay_microseconds: {queue_delay_us} }}\n'
            f'instance_group [ {{ kind: KIND_GPU count: {instances} }} ]\n')


def preprocess_config(meta: dict, max_batch: int = 64, queue_delay_us: int = 500) -> str:
    """The python-backend `preprocess` model: image bytes [B, 1] -> normalised pixels [B, 3, S, S]."""
    s = int(meta["input_size"])
    params = {"input_size": str(s), "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"])}
    return (f'name: "{PREPROCESS}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
            'input [ { name: "image" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
            f'output [ {{ name: "pixels" data_type: TYPE_FP32 dims: [ 3, {s}, {s} ] }} ]\n'
            f'dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}\n'
            'instance_group [ { kind: KIND_CPU count: 1 } ]\n'
            + "".join(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n'
                      for k, v in params.items()))


def pipeline_config(meta: dict, max_batch: int = 64) -> str:
    """The ensemble a stock Triton serves: image bytes -> `preprocess` -> `image_encoder` -> embedding."""
    return (f'name: "{IMAGE_PIPELINE}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
            'input [ { name: "image" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
            f'output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ {int(meta["dim"])} ] }} ]\n'
            'ensemble_scheduling { step [\n'
            f'  {{ model_name: "{PREPROCESS}" model_version: -1 input_map {{ key: "image" value: "image" }} '
            'output_map { key: "pixels" value: "pixels" } },\n'
            f'  {{ model_name: "{IMAGE}" model_version: -1 input_map {{ key: "pixels" value: "pixels" }} '
            'output_map { key: "embedding" value: "embedding" } } ] }\n')


def without_batching(config: str) -> str:
    """The same configuration with Triton's dynamic batcher off."""
    return re.sub(r"^dynamic_batching \{[^}]*\}\n", "", config, flags=re.M)


def write_image_pipeline(repo: str, meta: dict, batching: bool = True) -> list[str]:
    """`preprocess` (its model.py and the shared resize beside it) and the `image_pipeline`
    ensemble in repo, for the image encoder described by meta; returns their names."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pre = os.path.join(repo, PREPROCESS)
    os.makedirs(os.path.join(pre, VERSION), exist_ok=True)
    with open(os.path.join(pre, CONFIG), "w") as f:
        f.write(preprocess_config(meta) if batching else without_batching(preprocess_config(meta)))
    shutil.copy(os.path.join(here, "encode", "triton_preprocess.py"), os.path.join(pre, VERSION, "model.py"))
    shutil.copy(os.path.join(here, "data", "preprocess.py"), os.path.join(pre, VERSION, "skulens_preprocess.py"))
    ens = os.path.join(repo, IMAGE_PIPELINE)
    os.makedirs(os.path.join(ens, VERSION), exist_ok=True)   # an ensemble has a version folder, empty
    with open(os.path.join(ens, CONFIG), "w") as f:
        f.write(pipeline_config(meta))
    return [PREPROCESS, IMAGE_PIPELINE]


def write_text_pipeline(repo: str, meta: dict, tokenizer: str) -> list[str]:
    """`tokenize` (python backend, the model's tokenizer.json beside it) and the `text_pipeline`
    ensemble: text [B, 1] -> tokenize -> text_encoder -> embedding."""
    here = os.path.dirname(os.path.abspath(__file__))
    tok = os.path.join(repo, TOKENIZE)
    os.makedirs(os.path.join(tok, VERSION), exist_ok=True)
    with open(os.path.join(tok, CONFIG), "w") as f:
        f.write(f'name: "{TOKENIZE}"\nbackend: "python"\nmax_batch_size: 64\n'
                'input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                'output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },\n'
                '         { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
                'instance_group [ { kind: KIND_CPU count: 1 } ]\n'
                f'parameters {{ key: "max_tokens" value: {{ string_value: "{int(meta.get("max_tokens", 128))}" }} }}\n')
    shutil.copy(os.path.join(here, "triton_tokenize.py"), os.path.join(tok, VERSION, "model.py"))
    shutil.copy(tokenizer, os.path.join(tok, VERSION, "tokenizer.json"))
    ens = os.path.join(repo, TEXT_PIPELINE)
    os.makedirs(os.path.join(ens, VERSION), exist_ok=True)
    with open(os.path.join(ens, CONFIG), "w") as f:
        f.write(f'name: "{TEXT_PIPELINE}"\nplatform: "ensemble"\nmax_batch_size: 64\n'
                'input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
                f'output [ {{ name: "embedding" data_type: TYPE_FP32 dims: [ {int(meta["dim"])} ] }} ]\n'
                'ensemble_scheduling { step [\n'
                f'  {{ model_name: "{TOKENIZE}" model_version: -1 input_map {{ key: "text" value: "text" }} '
                'output_map { key: "input_ids" value: "ids" } output_map { key: "attention_mask" value: "mask" } },\n'
                f'  {{ model_name: "{TEXT}" model_version: -1 input_map {{ key: "input_ids" value: "ids" }} '
                'input_map { key: "attention_mask" value: "mask" } '
                'output_map { key: "embedding" value: "embedding" } } ] }\n')
    return [TOKENIZE, TEXT_PIPELINE]


def with_backend(config: str, backend: str) -> str:
    """The same configuration served by another Triton backend (e.g. "python")."""
    out, n = re.subn(r'^(backend|platform):\s*"[^"]*"', f'backend: "{backend}"', config, count=1, flags=re.M)
    if not n:
        raise ValueError("the model configuration names no backend")
    return out


# --- paths -------------------------------------------------------------------------
def model_path(folder: str) -> str:
    return os.path.join(folder, VERSION, "model.onnx")


def plan_path(folder: str) -> str:
    """A TensorRT engine (skulens.encode.tensorrt)."""
    return os.path.join(folder, VERSION, "model.plan")


def tokenizer_path(folder: str) -> str:
    return os.path.join(folder, VERSION, "tokenizer.json")


def has_model(folder: str) -> bool:
    return os.path.exists(model_path(folder))


# --- reading -----------------------------------------------------------------------
def read_meta(folder: str) -> dict:
    p = os.path.join(folder, META)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p} is missing: export the models with `make models` (skulens-train export)")
    with open(p) as f:
        return json.load(f)


def read_config(folder: str) -> str:
    with open(os.path.join(folder, CONFIG)) as f:
        return f.read()


# --- writing -----------------------------------------------------------------------
def write(folder: str, meta: dict, config: str) -> None:
    """skulens.json and config.pbtxt of the model in folder (its network already in 1/)."""
    os.makedirs(os.path.join(folder, VERSION), exist_ok=True)
    with open(os.path.join(folder, CONFIG), "w") as f:
        f.write(config)
    with open(os.path.join(folder, META), "w") as f:
        json.dump(meta, f, indent=1)


@contextlib.contextmanager
def staged(repo: str, name: str):
    """A fresh folder to build model `name` in, swapped into `repo` only when the block
    succeeds: a failed export leaves the previous model in place."""
    folder = os.path.join(repo, name)
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, VERSION))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = folder + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(folder):
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
