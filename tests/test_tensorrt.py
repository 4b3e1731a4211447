"""The GPU path up to where a GPU is needed: every model configuration skulens writes parses as
Triton's own ModelConfig (tensorrt_plan, ensemble, python preprocess, onnxruntime); the TensorRT
builder is importable here and says what to install; engines are built and checked against fp32
only where TensorRT and a GPU exist (bench/gpu_check.sh runs that on a GPU machine)."""

import os

import numpy as np
import pytest
from google.protobuf import text_format

import onnx_models
from skulens.encode import model_repo, tensorrt

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="pip install tritonclient[grpc]: Triton's ModelConfig proto")
META = {"dim": 256, "input_size": 64, "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


def parse(config: str):
    return text_format.Parse(config, model_config_pb2.ModelConfig())


def test_every_config_is_a_valid_triton_model_config():
    img = parse(model_repo.image_config(64, 256))
    assert img.backend == "onnxruntime" and img.input[0].dims == [3, 64, 64]
    assert parse(model_repo.text_config(256)).input[1].name == "attention_mask"
    trt = parse(model_repo.tensorrt_config(model_repo.IMAGE, META))
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 64
    assert list(trt.dynamic_batching.preferred_batch_size) == [8, 32, 64]
    assert trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert parse(model_repo.tensorrt_config(model_repo.TEXT, META)).input[0].dims == [-1]
    pre = parse(model_repo.preprocess_config(META))
    assert pre.backend == "python" and pre.input[0].data_type == model_config_pb2.TYPE_STRING
    assert pre.parameters["input_size"].string_value == "64"
    ens = parse(model_repo.pipeline_config(META))
    assert ens.platform == "ensemble"
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["preprocess", "image_encoder"]
    assert not parse(model_repo.without_batching(model_repo.image_config(64, 256))).HasField("dynamic_batching")


def test_the_exported_repository_carries_the_ensemble(tmp_path):
    repo = str(tmp_path)
    onnx_models.tiny_image_encoder(repo)
    names = model_repo.write_image_pipeline(repo, model_repo.read_meta(os.path.join(repo, model_repo.IMAGE)))
    assert names == ["preprocess", "image_pipeline"]
    assert os.path.exists(os.path.join(repo, "preprocess", "1", "model.py"))
    assert os.path.exists(os.path.join(repo, "preprocess", "1", "skulens_preprocess.py"))
    parse(model_repo.read_config(os.path.join(repo, "image_pipeline")))


@pytest.mark.skipif(tensorrt.unavailable() is None, reason="TensorRT and a GPU are here: the build test runs")
def test_without_tensorrt_the_builder_says_what_to_install(tmp_path):
    why = tensorrt.unavailable()
    assert "tensorrt" in why.lower()
    with pytest.raises(tensorrt.TensorRTUnavailable, match="skulens\\[gpu\\]|CUDA"):
        tensorrt.build_engine("model.onnx", str(tmp_path / "x.plan"))
    onnx_models.tiny_image_encoder(str(tmp_path / "repo"))
    assert tensorrt.main(["--model-repo", str(tmp_path / "repo"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(ValueError, match="precision"):
        tensorrt.build_engine("model.onnx", str(tmp_path / "x.plan"), precision="int4")


@pytest.mark.skipif(tensorrt.unavailable() is not None, reason=f"needs TensorRT and an NVIDIA GPU: "
                    f"{tensorrt.unavailable()}")
def test_engines_build_and_agree_with_fp32(tmp_path):  # pragma: no cover - GPU machines only
    repo = str(tmp_path / "repo")
    onnx_models.tiny_image_encoder(repo)
    built = tensorrt.export(repo, str(tmp_path / "trt"), "fp16")
    assert built[0]["precision"] == "fp16" and os.path.getsize(built[0]["plan"]) > 0
    parse(model_repo.read_config(str(tmp_path / "trt" / "image_encoder")))
    assert os.path.exists(tmp_path / "trt" / "timing.cache")
    np.testing.assert_equal(model_repo.read_meta(str(tmp_path / "trt" / "image_encoder"))["dim"],
                            model_repo.read_meta(os.path.join(repo, "image_encoder"))["dim"])
