"""A manifest CSV (docs/architecture.md) as model-ready `CaseTensors`, read through training.data."""

from __future__ import annotations

import sys
from pathlib import Path

from encoders.errors import InvalidInputError
from encoders.factory import ModelBundle
from training.case_tensors import CaseTensors, build_case_tensors


def manifest_case_tensors(bundle: ModelBundle, path: str | Path, split: str | None = None,
                          limit: int | None = None) -> CaseTensors:
    """Cases of `path` (optionally one split, at most `limit`); unreadable files drop that modality."""
    from encoders.preprocess.ecg import read_ecg
    from training.data.manifest import read_manifest

    items = []
    problems = 0
    for record in read_manifest(path):
        if split and record.split and record.split != split:
            continue
        image = ecg = None
        try:
            image = bundle.preprocess_xray(record.xray_path) if record.xray_path else None
        except (InvalidInputError, OSError) as exc:
            problems += 1
            print(f"warning: {record.case_id}: X-ray skipped ({exc})", file=sys.stderr)
        try:
            if record.ecg_path:
                signal = read_ecg(record.ecg_path)
                ecg = (signal.signal, float(signal.fs), list(signal.lead_names))
        except (InvalidInputError, OSError) as exc:
            problems += 1
            print(f"warning: {record.case_id}: ECG skipped ({exc})", file=sys.stderr)
        if image is None and ecg is None and not (record.report and record.report.strip()):
            continue
        items.append((record.case_id, record.labels, image, ecg, record.report))
        if limit and len(items) >= limit:
            break
    if not items:
        raise InvalidInputError("data", f"{path} yielded no usable case; check the paths in the manifest")
    return build_case_tensors(bundle, items)
