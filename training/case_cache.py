"""Prepared phantom cases kept on disk between runs, so a staged recipe generates its cases once.

Why: a phantom case costs ~9 ms to draw and prepare on 2 cores (the X-ray render and the 500 Hz ECG
dominate), so each stage of the README's staged recipe spent 1-2 of its minutes re-drawing the
12,000 cases the stage before had drawn. A population is a pure function of (seed, index), so the
first n cases of a cached set ARE cases 0..n-1: a request reads the first n of any cached set that
is large enough, or draws only the cases past the largest smaller one, and writes the longer set back.

The key holds everything the prepared tensors depend on: seed, missing rate, the preset's X-ray and
ECG input geometry, and a hash of the source files that draw and prepare the cases. An edited
generator or preprocessor therefore never reads stale cases; its old files are simply not matched
(delete the folder to reclaim them). A set costs ~80 KB per case on disk (fp16 pixels at 128 px,
fp32 ECG at 100 Hz x 10 s): 12,000 cases take ~1 GB.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from encoders.factory import ModelBundle
from training.case_tensors import CaseTensors

_SOURCES = ("training/phantom/*.py", "encoders/preprocess/*.py", "training/case_tensors.py",
            "training/phantom_dataset.py")
_ROOT = Path(__file__).resolve().parent.parent


def cache_key(bundle: ModelBundle, seed: int, missing_rate: float) -> str:
    """16 hex digits naming one prepared population (see the module docstring for what goes in)."""
    digest = hashlib.sha256()
    for pattern in _SOURCES:
        for path in sorted(_ROOT.glob(pattern)):
            digest.update(path.relative_to(_ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    xray, ecg = bundle.config["xray"], bundle.config["ecg"]
    geometry = {"image_size": xray["image_size"], "sample_rate": ecg["sample_rate"], "seconds": ecg["seconds"]}
    digest.update(json.dumps({"seed": int(seed), "missing_rate": float(missing_rate), **geometry},
                             sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_phantom_case_tensors(bundle: ModelBundle, n: int, seed: int, missing_rate: float, folder: str | Path,
                                workers: int | None = None, write: bool = True) -> CaseTensors:
    """Cases 0..n-1 of phantom population `seed`, prepared for `bundle`, read from `folder` where a cached
    set covers them; the rest are drawn (training.phantom_dataset) and, with `write`, the longer set is
    stored and the shorter one it extends removed."""
    from training.phantom_dataset import phantom_case_tensors

    folder = Path(folder)
    key = cache_key(bundle, seed, missing_rate)
    sizes = _cached_sizes(folder, key)
    larger = [size for size in sizes if size >= n]
    if larger:
        return _head(_load(folder / _name(key, min(larger))), n)
    smaller = max(sizes, default=0)
    have = _load(folder / _name(key, smaller)) if smaller else None
    fresh = phantom_case_tensors(bundle, n - smaller, seed, missing_rate=missing_rate, workers=workers,
                                 start=smaller)
    data = fresh if have is None else _concat(have, fresh)
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        _save(data, folder / _name(key, n))
        if smaller:
            (folder / _name(key, smaller)).unlink(missing_ok=True)
    return data


def _name(key: str, n: int) -> str:
    return f"phantom-{key}-{n}.pt"


def _cached_sizes(folder: Path, key: str) -> list[int]:
    pattern = re.compile(rf"phantom-{key}-(\d+)\.pt")
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := pattern.fullmatch(p.name)))


def _save(data: CaseTensors, path: Path) -> None:
    # Write beside, then rename: a reader (another stage, another rank) never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(dict(vars(data)), tmp)
    tmp.replace(path)


def _load(path: Path) -> CaseTensors:
    return CaseTensors(**torch.load(path, map_location="cpu", weights_only=True))


def _head(data: CaseTensors, n: int) -> CaseTensors:
    return CaseTensors(**{field: value[:n] for field, value in vars(data).items()})


def _concat(a: CaseTensors, b: CaseTensors) -> CaseTensors:
    joined = {}
    for field, value in vars(a).items():
        other = getattr(b, field)
        joined[field] = value + other if isinstance(value, list) else torch.cat([value, other])
    return CaseTensors(**joined)
