"""One phantom case in memory, and many in parallel.

A case is a pure function of (seed, index): each concern (latent truth, ECG, X-ray, report, missing
modalities) has its own generator keyed on (seed, index, stream), so the ECG and report of a case do not
change with the X-ray size and case 7 is the same in a run of 10 or of 10 000.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from training.phantom.errors import invalid_input
from training.phantom.ecg import FS, LEAD_NAMES, synthesize_ecg
from training.phantom.labels import ECG_FINDINGS
from training.phantom.latent import (STREAM_ECG, STREAM_REPORT, STREAM_XRAY, case_rng, sample_latent)
from training.phantom.reports import ecg_statements, radiology_report
from training.phantom.xray import render_xray


@dataclass
class PhantomCase:
    case_id: str
    patient_id: str
    study_time: str
    labels: tuple[str, ...]
    attributes: dict
    xray: np.ndarray | None                      # uint8 [S, S]
    xray_masks: dict[str, np.ndarray]            # label -> bool [S, S]
    ecg: np.ndarray | None                       # float32 [12, 5000] mV
    ecg_fs: int = FS
    lead_names: tuple[str, ...] = LEAD_NAMES
    ecg_masks: dict[str, dict] = field(default_factory=dict)
    xray_report: str | None = None
    ecg_report: str | None = None
    report: str | None = None
    xray_geometry: dict = field(default_factory=dict)  # pixel landmarks of this rendering (size-dependent)

    def modalities(self) -> tuple[str, ...]:
        present = []
        if self.xray is not None:
            present.append("xray")
        if self.ecg is not None:
            present.append("ecg")
        if self.report:
            present.append("text")
        return tuple(present)


def _check(xray_size: int, missing_rate: float) -> None:
    if not isinstance(xray_size, (int, np.integer)) or not 64 <= int(xray_size) <= 4096:
        raise invalid_input("xray_size", f"got {xray_size!r}; use an integer number of pixels between 64 and 4096")
    if not 0.0 <= float(missing_rate) < 1.0:
        raise invalid_input("missing_rate", f"got {missing_rate!r}; use a fraction in [0, 1)")


def generate_case(seed: int, index: int, *, xray_size: int = 512, missing_rate: float = 0.15) -> PhantomCase:
    """Case `index` of the phantom population `seed` (deterministic)."""
    _check(xray_size, missing_rate)
    if index < 0:
        raise invalid_input("index", f"got {index}; case indices start at 0")
    latent = sample_latent(seed, index, missing_rate)
    labels, attrs = latent.labels, latent.attributes

    signal, ecg_masks, params = synthesize_ecg(labels, attrs, case_rng(seed, index, STREAM_ECG))
    attrs.update({k: params[k] for k in ("heart_rate", "pr_ms", "qrs_ms", "qt_ms", "voltage")})

    rep_rng = case_rng(seed, index, STREAM_REPORT)
    total_chars = rep_rng.uniform(250, 900)
    x_share = rep_rng.uniform(0.55, 0.75)
    xray_report = radiology_report(labels, attrs, rep_rng, total_chars * x_share)
    ecg_labels = labels if set(labels) & set(ECG_FINDINGS) else labels + ("normal",)
    ecg_report = ecg_statements(ecg_labels, params, rep_rng, total_chars * (1 - x_share))

    xray, xray_masks, geometry = None, {}, {}
    if "xray" not in latent.missing:
        xray, xray_masks, geometry = render_xray(labels, attrs, int(xray_size), case_rng(seed, index, STREAM_XRAY))
    ecg = signal if "ecg" not in latent.missing else None
    if ecg is None:
        ecg_masks = {}
    has_text = "text" not in latent.missing
    attrs["missing"] = list(latent.missing)
    return PhantomCase(
        case_id=f"ph{seed}-{index:06d}",
        patient_id=latent.patient_id,
        study_time=latent.study_time,
        labels=labels,
        attributes=attrs,
        xray=xray,
        xray_masks=xray_masks,
        ecg=ecg,
        ecg_masks=ecg_masks,
        xray_report=xray_report if has_text else None,
        ecg_report=ecg_report if has_text else None,
        report=f"{xray_report}\nECG:\n{ecg_report}" if has_text else None,
        xray_geometry=geometry,
    )


def _chunk(args: tuple[int, int, int, int, float]) -> list[PhantomCase]:
    seed, start, stop, size, missing = args
    return [generate_case(seed, i, xray_size=size, missing_rate=missing) for i in range(start, stop)]


def generate_cases(n: int, seed: int, *, xray_size: int = 512, missing_rate: float = 0.15,
                   workers: int | None = None, start: int = 0) -> list[PhantomCase]:
    """Cases start .. start+n-1 in index order; `workers` > 1 uses a process pool (None: all CPUs)."""
    if n < 0:
        raise invalid_input("n", f"got {n}; ask for zero or more cases")
    _check(xray_size, missing_rate)
    workers = os.cpu_count() or 1 if workers is None else max(1, int(workers))
    if workers == 1 or n < 16:
        return _chunk((seed, start, start + n, xray_size, missing_rate))
    # Contiguous chunks, a few per worker, keep pickling overhead low and the order trivial.
    n_chunks = min(n, workers * 4)
    bounds = np.linspace(start, start + n, n_chunks + 1).astype(int)
    jobs = [(seed, int(a), int(b), xray_size, missing_rate) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [case for part in pool.map(_chunk, jobs) for case in part]
