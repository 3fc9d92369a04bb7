"""Latency percentiles and a closed-loop load generator (N workers, each sending its next request
as soon as its last one returns), the shape of load a connection pool puts on a server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np


def percentiles_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    if values.size == 0:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p99_ms": round(float(np.percentile(values, 99)), 3),
            "mean_ms": round(float(values.mean()), 3)}


def time_calls(call: Callable[[int], object], n: int, warmup: int = 3) -> list[float]:
    """Latency of `call(i)` for i in range(n), one at a time (concurrency 1)."""
    for i in range(warmup):
        call(i)
    out = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - start)
    return out


def closed_loop(call: Callable[[int, int], object], concurrency: int, duration_s: float,
                warmup_s: float = 0.5) -> dict[str, float]:
    """QPS and latency of `call(worker, i)` from `concurrency` threads for `duration_s` after a warm-up."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    t_measure = [0.0]
    t_stop = [0.0]

    def worker(w: int) -> None:
        start_gate.wait()
        i = 0
        while True:
            begin = time.perf_counter()
            if begin >= t_stop[0]:
                return
            try:
                call(w, i)
            except Exception:  # noqa: BLE001 - counted, reported next to the figures
                errors[w] += 1
            end = time.perf_counter()
            if begin >= t_measure[0]:
                latencies[w].append(end - begin)
            i += 1

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    for thread in threads:
        thread.start()
    now = time.perf_counter()
    t_measure[0] = now + warmup_s
    t_stop[0] = now + warmup_s + duration_s
    start_gate.wait()
    for thread in threads:
        thread.join()
    done = [x for per in latencies for x in per]
    return {"concurrency": concurrency, "qps": round(len(done) / duration_s, 1), "requests": len(done),
            "errors": sum(errors), **percentiles_ms(done)}


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline in (None, 0) or value != value or baseline != baseline:
        return None
    return round(float(value) / float(baseline), 3)
