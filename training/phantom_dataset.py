"""Phantom cases (training.phantom) as model-ready `CaseTensors`.

A phantom population is a pure function of its seed, so "held-out" means another seed: the bundled
checkpoint is trained on seed 0 and evaluated on seeds such as 777.
"""

from __future__ import annotations

import os

from encoders.factory import ModelBundle
from training.case_tensors import CaseTensors, build_case_tensors

# Missing-modality rate of the training and evaluation populations (each modality independently).
DEFAULT_MISSING_RATE = 0.15


def phantom_case_tensors(bundle: ModelBundle, n: int, seed: int, *, missing_rate: float = DEFAULT_MISSING_RATE,
                         workers: int | None = None, start: int = 0) -> CaseTensors:
    """Generate phantom cases at the preset's X-ray size and prepare them with the bundle."""
    from training.phantom import generate_cases

    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    cases = generate_cases(n, seed, xray_size=max(64, int(bundle.config["xray"]["image_size"])),
                           missing_rate=missing_rate, workers=workers, start=start)
    return build_case_tensors(bundle, (
        (case.case_id, case.labels, case.xray,
         (case.ecg, float(case.ecg_fs), list(case.lead_names)) if case.ecg is not None else None,
         case.report)
        for case in cases
    ))
