"""What every benchmark prints first: the machine, its cores, and the pinning used."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def describe(pinning: dict[str, int | None]) -> dict[str, object]:
    cpus = available_cpus()
    return {
        "count": os.cpu_count(),
        "available": cpus,
        "model": cpu_model(),
        "python": platform.python_version(),
        "pinning": pinning,
    }


def pin(cpu: int | None) -> None:
    """Pin the calling process to ``cpu`` (no-op where affinity is unsupported)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def pair_pinning() -> dict[str, int | None]:
    """Producer and consumer on the first two available cores (the same one if only one)."""
    cpus = available_cpus()
    if not hasattr(os, "sched_setaffinity"):
        return {"producer": None, "consumer": None}
    return {"producer": cpus[0], "consumer": cpus[1] if len(cpus) > 1 else cpus[0]}
