"""A real PostgreSQL server for the tests: Debian's `postgresql` package, a cluster made by
`initdb` in a temporary folder and started by `pg_ctl` on a free loopback port. PostgreSQL
refuses to run as root and CI runs as root, so there it runs as the `postgres` user (runuser).
Trust authentication on 127.0.0.1 only. The tests run it with fsync off (they kill skulens, not
the machine); the benchmarks with fsync on, as a deployment has it."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, fsync: bool = False):
        initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not (initdb and self.pg_ctl):
            raise FileNotFoundError("PostgreSQL's initdb/pg_ctl not found: apt-get install postgresql")
        self.root = tempfile.mkdtemp(prefix="skulens-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self._as = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", self.data, "-A", "trust", "-U", "skulens", "-E", "UTF8", "--no-sync"])
        self._opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                      f"-c fsync={'on' if fsync else 'off'} -c max_connections=300 -c shared_buffers=64MB")
        self.start()
        self.url = f"postgresql://skulens@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run([self.pg_ctl, "-D", self.data, "-l", os.path.join(self.root, "log"), "-o", self._opts, "-w",
                   "start"])

    def halt(self) -> None:
        """Stop the server abruptly (a crash, as far as clients can tell); start() brings it back."""
        self._run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"])

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self._as + cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://skulens@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(self._as + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)
