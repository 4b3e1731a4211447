"""CPU affinity of the whole server process (`cpus` setting, `skulens serve --cpus 1`).

Why: grpcio's sync server hands each call from its polling thread to a handler thread and back.
When the two run on different cores every hand-off is a cross-core wake-up, which on a virtual
machine is an inter-processor interrupt and an exit to the hypervisor. Pinned to one core (the
other cores left to clients, encoders or other workers), the same server answered a Search by
vector in 0.7x the time with 0.7x the CPU per call (bench/RESULTS.md).
"""

from __future__ import annotations

import os

from .errors import InvalidArgument


def parse(cpus: str) -> set[int]:
    """"1", "0-3", "0,2-3" -> the set of CPU numbers (each must be one this process may use)."""
    out: set[int] = set()
    try:
        for part in (p.strip() for p in cpus.split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise InvalidArgument(f"cpus {cpus!r}: give CPU numbers and ranges, e.g. '1' or '0-3'") from None
    allowed = os.sched_getaffinity(0)
    if not out or not out <= allowed:
        raise InvalidArgument(f"cpus {cpus!r}: this process may use CPUs {sorted(allowed)}")
    return out


def pin(cpus: str) -> set[int] | None:
    """Every thread of this process, and so every thread it starts later, onto `cpus` ("" : as is)."""
    if not cpus:
        return None
    want = parse(cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), want)
        except (ProcessLookupError, PermissionError):  # a thread that just ended
            pass
    return want


def usable() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))
