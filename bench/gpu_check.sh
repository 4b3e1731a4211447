#!/usr/bin/env bash
# The GPU check, one command, on a machine with an NVIDIA GPU (the device this project may lend):
#   bash bench/gpu_check.sh [MODEL_REPO]      (default model_repo; OUT=... for where the JSON goes)
# Installs the GPU extras in a virtualenv of its own (TensorRT, ONNX Runtime GPU, CuPy, tritonclient),
# builds fp16 and int8 engines of the served image encoder (skulens.encode.tensorrt), checks them
# against fp32 ONNX Runtime on real photos (cosine >= 0.999 fp16, >= 0.99 int8) and times batch
# 1/8/64 (also through tritonclient where a tritonserver with the tensorrt backend exists), writing
# $OUT/gpu_check.json. Budget: 8 minutes, installs included (`timeout 470` below).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=${1:-model_repo}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi -L
VENV=${GPU_VENV:-/tmp/skulens-gpu-venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi
"$VENV/bin/pip" install -q "tensorrt-cu12>=10" "onnxruntime-gpu>=1.18" "cupy-cuda12x>=13" "onnx>=1.15" \
    "numpy" "pillow>=10" "scikit-image>=0.22" "tritonclient[grpc]>=2.50" "protobuf>=6.31,<7" "grpcio>=1.81.1,<1.82" \
    "tokenizers>=0.15"
timeout 470 "$VENV/bin/python" bench/gpu_check.py --model-repo "$REPO" --out "$OUT"
