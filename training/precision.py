"""The number format of a training step's forward pass (`tribind train --precision`).

Why bf16 on a CPU at all: on cores with native bf16 dot products (AVX512-BF16, AMX) oneDNN runs the
matrix products of an autocast bf16 step at about twice the fp32 rate. On the 2-core AMD EPYC
machine of this project a tiny-preset X-ray forward+backward of 32 films took 146-161 ms in bf16
against 258-286 ms in fp32, the ECG tower 61-69 against 100-102 ms. A 17-minute run of the
tiny recipe made 1765-1772 steps in bf16 (up to 2297 with LoRA dropout 0) against 1330 in fp32
(README, Sessions 12 and 13); whether more steps lift a given figure is measured there, run by run.

Why not everywhere: on a CPU without those instructions bf16 is emulated and slower than fp32, so
`auto` picks bf16 only where the CPU says it has them (and on CUDA, as before). Why measure even
then: the flag says bf16 is native, not that it is faster. On the 2-core Intel Xeon of session 22
(avx512_bf16, no AMX) a 90-second stage-1 run made 126 steps in bf16 against 181 in fp32, so a
time-budgeted recipe got half the steps it got on the AMD machine. So on such a CPU `auto` times one
forward+backward of a batch of the run's own cases both ways (`fastest_precision`, a few seconds) and
trains in the faster one; the start record of metrics.jsonl keeps the timings. Weights, the
optimizer state and the loss stay fp32 (autocast only casts the products), so the saved checkpoint
is the same kind of file either way and serves in fp32.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from encoders.errors import InvalidInputError

PRECISIONS = ("auto", "bf16", "fp32")
_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU advertises bf16 dot-product instructions (Linux: /proc/cpuinfo flags)."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux, or no /proc: assume none rather than risk an emulated, slower step
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.split(":", 1)[-1].split()))
    return False


def resolve_precision(requested: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for `requested` ('auto', 'bf16', 'fp32') on `device`."""
    if requested not in PRECISIONS:
        raise InvalidInputError("precision", f"{requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for one forward pass at `precision` ('bf16' or 'fp32')."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def fastest_precision(step: Callable[[str], None], repeats: int = 5, margin: float = 0.05,
                      clock: Callable[[], float] = time.perf_counter) -> tuple[str, dict[str, float]]:
    """'bf16' when it runs `step(precision)` (one forward+backward) at least `margin` faster than
    'fp32' here, else 'fp32'; and the median seconds of each.

    Why so careful: one pass of the tiny X-ray tower takes ~0.2 s, and five probes in a row on the
    shared 2-core machine of session 22 read fp32 anywhere from 0.17 to 0.26 s, so a single timing (or
    the best of three) sometimes picked bf16 for a stage that runs 40 % more steps in fp32. The passes
    are interleaved so that a slow spell hits both, the first of each (oneDNN builds its kernels then)
    is not counted, the median ignores a stray slow pass, and a near tie goes to fp32: the same speed
    for less rounding."""
    if repeats < 1:
        raise InvalidInputError("repeats", f"got {repeats}; time each precision at least once")
    times: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for precision in times:
        step(precision)
    for _ in range(repeats):
        for precision, seen in times.items():
            started = clock()
            step(precision)
            seen.append(clock() - started)
    median = {precision: statistics.median(seen) for precision, seen in times.items()}
    return ("bf16" if median["bf16"] < (1.0 - margin) * median["fp32"] else "fp32"), median
