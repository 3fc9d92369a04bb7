"""The number format of a training step's forward pass (`tribind train --precision`).

Why bf16 on a CPU at all: on cores with native bf16 dot products (AVX512-BF16, AMX) oneDNN runs the
matrix products of an autocast bf16 step at about twice the fp32 rate. On the 2-core AMD EPYC
machine of this project a tiny-preset X-ray forward+backward of 32 films took 146-161 ms in bf16
against 258-286 ms in fp32, the ECG tower 61-69 against 100-102 ms. A 17-minute run of the
tiny recipe made 1765-1772 steps in bf16 (up to 2297 with LoRA dropout 0) against 1330 in fp32
(README, Sessions 12 and 13); whether more steps lift a given figure is measured there, run by run.

Why not everywhere: on a CPU without those instructions bf16 is emulated and slower than fp32, so
`auto` picks bf16 only where the CPU says it has them (and on CUDA, as before). Weights, the
optimizer state and the loss stay fp32 (autocast only casts the products), so the saved checkpoint
is the same kind of file either way and serves in fp32.
"""

from __future__ import annotations

import contextlib
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
