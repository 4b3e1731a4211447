"""TensorRT engines for the encoders, for machines with an NVIDIA GPU: an fp16 engine, or an int8 one
from the QDQ graph (explicit quantisation: the scales are in the graph, so no calibrator, which
TensorRT 10 deprecates), each with an optimisation profile for batch 1..64 and a timing cache, in
a Triton `tensorrt_plan` model folder (model_repo.tensorrt_config: dynamic batching with preferred
sizes, GPU instance groups) beside the rest of the repository.

    python -m skulens.encode.tensorrt --model-repo model_repo --out model_repo_trt [--precision fp16|int8]

Importable without TensorRT; building without it (or without a GPU) raises TensorRTUnavailable,
which says what to install. `bench/gpu_check.sh` is the one command that runs it on a GPU machine.
"""

from __future__ import annotations

import argparse
import os
import shutil

from . import model_repo

GPU_EXTRAS = "pip install 'skulens[gpu]' (tensorrt, onnxruntime-gpu)"
PROFILE = (1, 8, 64)          # min, opt, max batch
TEXT_TOKENS = (1, 16, 128)    # min, opt, max tokens of a title


class TensorRTUnavailable(RuntimeError):
    """No TensorRT, or no GPU for it."""


def unavailable() -> str | None:
    """Why engines cannot be built here, or None when they can."""
    try:
        import tensorrt as trt
    except ImportError:
        return f"TensorRT is not installed: {GPU_EXTRAS}"
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    except Exception as e:  # noqa: BLE001 - CUDA initialisation fails without a GPU
        return f"TensorRT {trt.__version__} cannot reach a CUDA GPU: {e}"
    return None


def _profile_shapes(name: str, shape: tuple, tokens: bool) -> tuple:
    """(min, opt, max) of one input: the batch (and for text the token) axis ranges."""
    rest = tuple(shape[1:])
    if tokens:
        return tuple((b, t) for b, t in zip(PROFILE, TEXT_TOKENS))
    return tuple((b, *rest) for b in PROFILE)


def build_engine(onnx_path: str, plan_path: str, precision: str = "fp16", timing_cache: str | None = None,
                 workspace_mib: int = 2048) -> dict:
    """Serialize a TensorRT engine of the ONNX model to plan_path; returns what was built."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision is fp32, fp16 or int8, not {precision!r}")
    why = unavailable()
    if why:
        raise TensorRTUnavailable(why)
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:   # explicit batch is the only mode from TensorRT 10 on
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)   # int8: layers without Q/DQ run in fp16, not fp32
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)   # the scales come from the graph's QuantizeLinear nodes
    profile = builder.create_optimization_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for inp in inputs:
        tokens = inp.name in ("input_ids", "attention_mask", "token_type_ids")
        profile.set_shape(inp.name, *_profile_shapes(inp.name, tuple(inp.shape), tokens))
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache and os.path.exists(timing_cache):
        with open(timing_cache, "rb") as f:
            cache_bytes = f.read()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine of {onnx_path} ({precision})")
    with open(plan_path, "wb") as f:
        f.write(plan)
    if timing_cache:
        with open(timing_cache, "wb") as f:
            f.write(memoryview(config.get_timing_cache().serialize()))
    return {"precision": precision, "plan": plan_path, "bytes": os.path.getsize(plan_path),
            "inputs": [i.name for i in inputs], "tensorrt": trt.__version__}


def export(repo: str, out: str, precision: str = "fp16", int8_onnx: str | None = None) -> list[dict]:
    """A copy of repo in out whose encoders are TensorRT plans (`tensorrt_plan` folders);
    int8 builds the image engine from int8_onnx (the QDQ graph `skulens-train export --int8` writes
    beside fp32.onnx) and keeps the text model fp16."""
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, "timing.cache")
    built = []
    for name in model_repo.MODELS:
        src = os.path.join(repo, name)
        if not model_repo.has_model(src):
            continue
        meta = model_repo.read_meta(src)
        dst = os.path.join(out, name)
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(os.path.join(dst, model_repo.VERSION))
        onnx_path = model_repo.model_path(src)
        p = precision
        if name == model_repo.IMAGE and precision == "int8":
            onnx_path = int8_onnx or onnx_path
        elif precision == "int8":
            p = "fp16"
        built.append({"model": name, **build_engine(onnx_path, model_repo.plan_path(dst), p, cache)})
        if name == model_repo.TEXT:
            shutil.copy(model_repo.tokenizer_path(src), model_repo.tokenizer_path(dst))
        model_repo.write(dst, {**meta, "engine": built[-1]}, model_repo.tensorrt_config(name, meta))
        if name == model_repo.IMAGE:
            model_repo.write_image_pipeline(out, meta)
    return built


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-repo", default="model_repo")
    ap.add_argument("--out", required=True)
    ap.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    ap.add_argument("--int8-onnx", help="the QDQ image graph (int8 precision)")
    args = ap.parse_args(argv)
    try:
        for b in export(args.model_repo, args.out, args.precision, args.int8_onnx):
            print(f"built {b['model']}: {b['precision']} engine, {b['bytes'] / 2**20:.1f} MiB")
    except TensorRTUnavailable as e:
        print(f"skulens.encode.tensorrt: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
