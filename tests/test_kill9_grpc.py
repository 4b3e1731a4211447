"""kill -9 of the server while a client upserts through gRPC: after a restart every acknowledged
product is there and no batch is half-present. 3 rounds in CI; SKULENS_KILL_ROUNDS=20 for more."""

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np

from skulens.client import Client

ROUNDS = int(os.environ.get("SKULENS_KILL_ROUNDS", "3"))
D, BATCH = 16, 20


def _serve(data: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", data, "--port", "0",
                             "--dim", str(D)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc, proc.stdout.readline().split(" on ")[1].split(" ")[0]


def test_acknowledged_upserts_survive_kill_9(tmp_path):
    data = str(tmp_path / "c")
    rng = np.random.default_rng(0)
    acked, sent = [], []
    batch_no = 0
    for rnd in range(ROUNDS):
        proc, target = _serve(data)
        stop = threading.Event()

        def writer():
            nonlocal batch_no
            with Client(target, timeout=5) as c:
                while not stop.is_set():
                    b = batch_no
                    batch_no += 1
                    sent.append(b)
                    try:
                        c.upsert([dict(id=f"b{b}-{j}", vector=rng.standard_normal(D)) for j in range(BATCH)])
                        acked.append(b)
                    except grpc.RpcError:
                        return
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.3 + 0.7 * rng.random())
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        t.join(20)
        proc, target = _serve(data)
        try:
            with Client(target, timeout=10) as c:
                for b in sent:
                    present = []
                    for j in range(BATCH):
                        try:
                            c.get(f"b{b}-{j}")
                            present.append(True)
                        except grpc.RpcError as e:
                            assert e.code() == grpc.StatusCode.NOT_FOUND
                            present.append(False)
                    assert all(present) or not any(present), f"round {rnd}: batch {b} is half-present"
                    assert all(present) or b not in acked, f"round {rnd}: acknowledged batch {b} was lost"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    assert len(acked) >= ROUNDS  # every round acknowledged writes before its kill
