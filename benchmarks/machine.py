"""What the figures were measured on: they mean little without the machine, the date and its load."""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def gpu() -> dict[str, object]:
    import torch

    if torch.cuda.is_available():
        return {"available": True, "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count()}
    return {"available": False, "name": None, "count": 0}


def describe_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe() -> dict[str, object]:
    import faiss
    import torch

    return {
        "date_utc": describe_time(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "gpu": gpu(),
        "started_monotonic": time.monotonic(),
    }


def rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (no psutil dependency)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
