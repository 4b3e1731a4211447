"""The proto is the single source of API truth: the committed generated code
must be exactly what `make proto` makes from it."""

import filecmp
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.join(ROOT, "proto"),
                    f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    os.path.join(ROOT, "proto", "skulens", "v1", "skulens.proto")], check=True)
    for name in ("skulens_pb2.py", "skulens_pb2.pyi", "skulens_pb2_grpc.py"):
        fresh = tmp_path / "skulens" / "v1" / name
        committed = os.path.join(ROOT, "server", "skulens", "v1", name)
        assert filecmp.cmp(fresh, committed, shallow=False), f"{name} is stale: run `make proto`"
