"""The machine a benchmark ran on, for its report (every benchmark records the CPU)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.machine())
    except OSError:
        return platform.machine()


def cores() -> int:
    return os.cpu_count() or 1
