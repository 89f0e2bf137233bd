"""What every benchmark prints beside its figures: the CPU model (hosts of one kind differ)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The 'model name' line of /proc/cpuinfo, else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
