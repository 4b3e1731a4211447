"""NVIDIA Triton as the encoders' runtime: start a real `tritonserver` over skulens' model
repository, and reach it with `tritonclient` (see `runners.TritonRunner`).

The server comes from PyPI's nvidia-pytriton, which bundles `tritonserver` with the python
backend only. It pins numpy < 2, so it lives in a virtualenv of its own (`make triton` builds
`.venv-triton`) and skulens runs its binary from there; nothing of pytriton is imported here.
Its Python stub embeds libpython: it needs this interpreter's libpython and the wheel's
bundled libraries on LD_LIBRARY_PATH, and the venv's bin first on PATH so the stub's Python
finds the venv's onnxruntime and numpy.

`prepare_repository` turns the exported repository (ONNX + `config.pbtxt` for Triton's
onnxruntime backend) into one for the python backend: the same config with `backend: "python"`
and `triton_model.py` beside a link to the same `model.onnx`.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time

from . import model_repo


class TritonUnavailable(RuntimeError):
    """No usable tritonserver (not installed, or it did not come up)."""


def find_install(venv: str | None = None) -> str:
    """The `pytriton` package folder inside the Triton virtualenv."""
    venv = venv or os.environ.get("SKULENS_TRITON_VENV") or os.path.join(os.getcwd(), ".venv-triton")
    hits = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "pytriton", "tritonserver", "bin",
                                  "tritonserver"))
    if not hits:
        raise TritonUnavailable(f"no tritonserver under {venv}: run `make triton` (a virtualenv with nvidia-pytriton "
                                "and onnxruntime), or point SKULENS_TRITON_VENV at one")
    return os.path.dirname(os.path.dirname(os.path.dirname(hits[0])))


def prepare_repository(repo: str, dest: str, batching: bool = True) -> list[str]:
    """Python-backend copies of the exported models in `dest`; returns their names. batching=False
    leaves Triton's dynamic batcher off (each request runs alone: the benchmark's comparison)."""
    here = os.path.join(os.path.dirname(__file__), "triton_model.py")
    names = []
    for name in model_repo.MODELS:
        src = os.path.join(repo, name)
        if not model_repo.has_model(src):
            continue
        try:
            config = model_repo.with_backend(model_repo.read_config(src), "python")
        except ValueError as e:
            raise ValueError(f"{src}: {e}") from None
        if not batching:
            config = model_repo.without_batching(config)
        out = os.path.join(dest, name)
        os.makedirs(os.path.join(out, model_repo.VERSION), exist_ok=True)
        with open(os.path.join(out, model_repo.CONFIG), "w") as f:
            f.write(config)
        shutil.copy(here, os.path.join(out, model_repo.VERSION, "model.py"))
        link = model_repo.model_path(out)
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.abspath(model_repo.model_path(src)), link)
        names.append(name)
        if name == model_repo.IMAGE:   # raw image bytes in: the ensemble (preprocess is python already)
            names += model_repo.write_image_pipeline(dest, model_repo.read_meta(src), batching)
        else:
            names += model_repo.write_text_pipeline(dest, model_repo.read_meta(src), model_repo.tokenizer_path(src))
    if not names:
        raise FileNotFoundError(f"no exported encoders in {repo}: run `make models`")
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """A tritonserver process on loopback serving `model_repo`'s encoders; a context manager.

    `url` is its gRPC address for `encoders.load(..., triton=url)`."""

    def __init__(self, model_repo: str, venv: str | None = None, grpc_port: int = 0, threads: int = 0,
                 log: str | None = None, batching: bool = True):
        self.pkg = find_install(venv)
        self.venv = self.pkg.split(os.sep + "lib" + os.sep)[0]
        self.python = re.search(r"python(3\.\d+)", self.pkg).group(1)   # the venv's Python, for its stub
        self.model_repo, self.threads, self.batching = model_repo, threads, batching
        self.grpc_port = grpc_port or _free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self._work: tempfile.TemporaryDirectory | None = None

    def _layout(self, work: str) -> tuple[str, str]:
        """Backends folder with the stub for this Python version (as pytriton lays it out)."""
        backends = os.path.join(work, "backends")
        shutil.copytree(os.path.join(self.pkg, "tritonserver", "backends"), backends)
        stub = os.path.join(self.pkg, "tritonserver", "python_backend_stubs", self.python, "triton_python_backend_stub")
        if not os.path.exists(stub):
            raise TritonUnavailable(f"nvidia-pytriton has no python-backend stub for Python {self.python}")
        shutil.copy(stub, os.path.join(backends, "python", "triton_python_backend_stub"))
        repo = os.path.join(work, "models")
        self.models = prepare_repository(self.model_repo, repo, self.batching)
        return backends, repo

    def _libpython_dir(self) -> str:
        """Where the venv's base interpreter keeps libpython (pyvenv.cfg's home is its bin/)."""
        with open(os.path.join(self.venv, "pyvenv.cfg")) as f:
            home = dict(line.split(" = ", 1) for line in f.read().splitlines() if " = " in line).get("home", "")
        for d in (os.path.join(os.path.dirname(home), "lib"), sysconfig.get_config_var("LIBDIR") or ""):
            if glob.glob(os.path.join(d, f"libpython{self.python}*.so*")):
                return d
        raise TritonUnavailable(f"no libpython{self.python} shared library for the Triton stub "
                                f"(the venv's Python must be built with --enable-shared)")

    def start(self, timeout: float = 120.0) -> "TritonServer":
        self._work = tempfile.TemporaryDirectory(prefix="skulens-triton-")
        backends, repo = self._layout(self._work.name)
        env = dict(os.environ)
        libs = [os.path.join(os.path.dirname(self.pkg), "nvidia_pytriton.libs"), self._libpython_dir()]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        env["PATH"] = os.path.join(self.venv, "bin") + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONPATH", None)   # the stub's Python is the venv's, not skulens'
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        cmd = [os.path.join(self.pkg, "tritonserver", "bin", "tritonserver"), f"--model-repository={repo}",
               f"--backend-directory={backends}", f"--cache-directory={os.path.join(self._work.name, 'caches')}",
               f"--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}", "--allow-http=false",
               "--allow-metrics=false", "--log-verbose=0", "--exit-on-error=true", "--strict-readiness=true"]
        self._log = open(self.log_path or os.path.join(self._work.name, "tritonserver.log"), "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as tc
        client = tc.InferenceServerClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TritonUnavailable(f"tritonserver exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if client.is_server_ready() and all(client.is_model_ready(m) for m in self.models):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.2)
        self.stop()
        raise TritonUnavailable(f"tritonserver not ready after {timeout:.0f} s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        self._log.flush()
        with open(self._log.name) as f:
            return f.read()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()   # SIGTERM: Triton drains in-flight requests, then exits
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._work is not None:
            self._log.close()
            self._work.cleanup()
            self._work = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
