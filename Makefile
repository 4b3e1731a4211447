# One entry point for people and CI. `make test` is what .ci/run runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PYTEST_ARGS ?=

.PHONY: install test test-py test-cpp bench clean proto

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)
	$(PIP) install -q ".[test,bench]"

test: install test-cpp test-py

test-py:
	$(PY) -m pytest -q $(PYTEST_ARGS)

# C++ unit tests of the kernel core, built apart from the wheel.
test-cpp:
	cmake -S . -B build/ctest -DSKULENS_BUILD_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/ctest -j2
	ctest --test-dir build/ctest --output-on-failure

# Regenerate the gRPC code from the proto (committed; tests/test_proto.py checks it is current).
proto:
	$(PY) -m grpc_tools.protoc -I proto --python_out=server --pyi_out=server --grpc_python_out=server \
		proto/skulens/v1/skulens.proto

bench: install
	$(PY) bench/kernel_bench.py
	$(PY) bench/catalog_bench.py

clean:
	rm -rf build $(VENV)
