"""CaseRecords -> the model's input tensors, through the bundle's preprocessors (the one path).

Used by the real-data evaluation and by fine-tuning: a record's files are decoded once and the
prepared arrays are reused for the trained and the random-init encoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from encoders.errors import InvalidInputError
from training.data.records import CaseRecord


@dataclass
class PreparedCases:
    records: list[CaseRecord]
    inputs: dict[str, torch.Tensor]          # "signals"+"lead_mask" or "pixels"
    failures: list[tuple[str, str]]          # (case id, reason) of records that could not be prepared


def prepare_cases(bundle, records: Iterable[CaseRecord], modality: str) -> PreparedCases:
    """Decode and preprocess the `modality` file of each record; records without it are left out."""
    from encoders.preprocess.ecg import read_ecg

    kept: list[CaseRecord] = []
    failures: list[tuple[str, str]] = []
    first: list[torch.Tensor] = []
    second: list[torch.Tensor] = []
    for record in records:
        try:
            if modality == "ecg":
                if not record.ecg_path:
                    continue
                ecg = read_ecg(record.ecg_path)
                signal, mask = bundle.preprocess_ecg(ecg.signal, ecg.fs, ecg.lead_names)
                first.append(signal)
                second.append(mask)
            elif modality == "xray":
                if not record.xray_path:
                    continue
                first.append(bundle.preprocess_xray(record.xray_path))
            else:
                raise ValueError(f"prepare_cases handles 'ecg' and 'xray', not {modality!r}")
        except InvalidInputError as exc:
            failures.append((record.case_id, str(exc)))
            continue
        kept.append(record)
    if not kept:
        return PreparedCases([], {}, failures)
    if modality == "ecg":
        inputs = {"signals": torch.stack(first), "lead_mask": torch.stack(second)}
    else:
        inputs = {"pixels": torch.stack(first)}
    return PreparedCases(kept, inputs, failures)


def batch_slices(n: int, batch_size: int) -> Iterable[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@torch.no_grad()
def encode_prepared(model, prepared: PreparedCases, modality: str, batch_size: int = 64,
                    features: bool = False) -> np.ndarray:
    """Unit joint-space embeddings [N, D], or with `features=True` the tower's own features [N, W]
    (before the projection into the shared space; what a linear probe should see)."""
    was_training = model.training
    model.eval()
    try:
        outputs = []
        n = len(prepared.records)
        for part in batch_slices(n, batch_size):
            if modality == "ecg":
                signals, mask = prepared.inputs["signals"][part], prepared.inputs["lead_mask"][part]
                out = model.ecg(signals, mask) if features else model.encode_ecg(signals, mask)
            else:
                pixels = prepared.inputs["pixels"][part]
                out = model.xray(pixels) if features else model.encode_xray(pixels)
            outputs.append(out.float().cpu())
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0), dtype=np.float32)
    finally:
        model.train(was_training)


def label_matrix(records: list[CaseRecord], labels: list[str], key: str | None = None) -> np.ndarray:
    """[N, K] 0/1 targets; `key` reads ';'-joined ids from metadata instead of record.labels."""
    index = {label: k for k, label in enumerate(labels)}
    matrix = np.zeros((len(records), len(labels)), dtype=np.int8)
    for row, record in enumerate(records):
        ids = record.metadata.get(key, "").split(";") if key else record.labels
        for label in ids:
            if label in index:
                matrix[row, index[label]] = 1
    return matrix
