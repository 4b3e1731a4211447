# One entry point for people and CI. `make test` is what .ci/run runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: install deps demo models test test-py test-cpp test-cpp-aarch64 bench clean proto train ship triton

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Debian packages: the compiler and CMake for the C++ extension, venv, PostgreSQL (the tests start
# their own server from it: the shared store of scale-out), the
# Fashion-MNIST catalogue of the demo, and opencv-doc's photos (the clutter of the independent
# scanner views, skulens/data/holdout.py, and the real scene box_in_scene.png). Installed only when missing (needs root).
DEBS := build-essential cmake python3-venv dataset-fashion-mnist postgresql opencv-doc
deps:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi

# torch first, from the local CPU wheel (a plain `torch` would pull a multi-GB CUDA build); it is
# needed to train and export, never to serve.
install: deps $(PY) triton
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q ".[test,bench,train]"

# NVIDIA Triton for `skulens serve --triton start` and tests/test_triton.py: PyPI's nvidia-pytriton
# bundles tritonserver with the python backend; it pins numpy < 2, so it gets its own virtualenv,
# with ONNX Runtime for the python-backend models (skulens/triton_model.py) and Pillow for the
# ensemble's `preprocess`, tokenizers for `tokenize` (skulens/triton_preprocess.py, triton_tokenize.py).
# Only its binary is run.
TRITON_VENV ?= .venv-triton
triton: $(TRITON_VENV)/.installed-3
$(TRITON_VENV)/.installed-3:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install -q "nvidia-pytriton==0.7.0" "onnxruntime>=1.18" "numpy<2" "pillow>=10" "tokenizers>=0.15"
	touch $@

# The shipped encoders (trained by skulens_train from training/shipped/*/config) as ONNX.
# robust (configs/robust.toml) continues main on randomised views: better on the independent views.
SHIPPED := training/shipped/robust training/shipped/text-minilm
model_repo/image_encoder/1/model.onnx: training/shipped/robust/model.pt training/shipped/robust/objectness.json \
		training/shipped/text-minilm/model.pt
	$(VENV)/bin/skulens-train export --run training/shipped/robust --text training/shipped/text-minilm --model-repo model_repo
models: model_repo/image_encoder/1/model.onnx

# The main job: the trained encoders exported to model_repo/, the catalogue built from the
# 70,000 Fashion-MNIST articles, served, queried with scanner views and a title, stopped.
DEMO_ARGS ?=
demo: install models
	$(VENV)/bin/skulens demo $(DEMO_ARGS)

# Reproduce the shipped encoders and training/REPORT.md from their configs (about 6 hours on
# 2 CPU cores; every step resumes), then copy them into training/shipped/.
RUNS := training/runs
TRAIN := $(VENV)/bin/skulens-train
train: install
	$(TRAIN) fit --config stage1 --runs $(RUNS)
	$(TRAIN) fit --config stage2 --runs $(RUNS) init_run=\"$(RUNS)/stage1\"
	$(TRAIN) fit --config main --runs $(RUNS) init_run=\"$(RUNS)/stage2\"
	$(TRAIN) evaluate --run $(RUNS)/stage1
	$(TRAIN) evaluate --run $(RUNS)/stage2
	$(TRAIN) evaluate --run $(RUNS)/main
	$(TRAIN) fit --config robust --runs $(RUNS) init_run=\"$(RUNS)/main\"
	$(VENV)/bin/skulens-train export --run $(RUNS)/robust --model-repo $(RUNS)/robust/model_repo
	$(TRAIN) objectness --run $(RUNS)/robust --model-repo $(RUNS)/robust/model_repo
	$(PY) bench/scanner_eval.py --model-repo $(RUNS)/robust/model_repo --out $(RUNS)/robust/scanner_eval.json
	$(TRAIN) text --runs $(RUNS) --run $(RUNS)/robust arch=minilm
	$(TRAIN) text --runs $(RUNS) arch=bilstm
	$(TRAIN) baselines --runs $(RUNS)
	$(TRAIN) experiments --runs $(RUNS)
	$(TRAIN) report --runs $(RUNS)
ship:
	for s in stage1 stage2; do mkdir -p training/shipped/$$s && \
		cp $(RUNS)/$$s/config.toml $(RUNS)/$$s/log.jsonl $(RUNS)/$$s/train.json $(RUNS)/$$s/eval.json \
		training/shipped/$$s/; done
	mkdir -p training/shipped/main training/shipped/text-minilm
	cp $(RUNS)/main/config.toml $(RUNS)/main/log.jsonl $(RUNS)/main/train.json $(RUNS)/main/eval.json \
		$(RUNS)/main/model.pt training/shipped/main/
	mkdir -p training/shipped/robust
	cp $(RUNS)/robust/config.toml $(RUNS)/robust/log.jsonl $(RUNS)/robust/train.json $(RUNS)/robust/scanner_eval.json \
		$(RUNS)/robust/model.pt $(RUNS)/robust/objectness.json training/shipped/robust/
	cp $(RUNS)/text-minilm/meta.json $(RUNS)/text-minilm/eval.json $(RUNS)/text-minilm/model.pt training/shipped/text-minilm/

test: install test-cpp test-cpp-aarch64 test-py

test-py:
	$(PY) -m pytest -q $(PYTEST_ARGS)

# C++ unit tests of the kernel core, built apart from the wheel.
test-cpp:
	cmake -S . -B build/ctest -DSKULENS_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/ctest -j2
	ctest --test-dir build/ctest --output-on-failure

# The same C++ tests cross-compiled for aarch64 (the NEON tables) and run under qemu-user, once as
# a CPU with the dot-product extension (qemu's `max`), once as a Cortex-A53 without it, and once
# capped by SKULENS_SIMD.
CROSS_DEBS := g++-aarch64-linux-gnu qemu-user
test-cpp-aarch64:
	@missing=$$(for p in $(CROSS_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; fi
	cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=kernels/aarch64-toolchain.cmake -DSKULENS_BUILD_TESTS=ON \
		-DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/aarch64 -j2
	qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max build/aarch64/kernel_tests
	qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a53 build/aarch64/kernel_tests
	SKULENS_SIMD=neon qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max build/aarch64/kernel_tests

# Regenerate the gRPC code from the proto (committed; tests/test_proto.py checks it is current).
proto:
	$(PY) -m grpc_tools.protoc -I proto --python_out=server --pyi_out=server --grpc_python_out=server \
		proto/skulens/v1/skulens.proto

bench: install
	$(PY) bench/kernel_bench.py
	$(PY) bench/catalog_bench.py

clean:
	rm -rf build $(VENV) $(TRITON_VENV)
