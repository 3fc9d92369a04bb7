"""Deterministic patient-level splits for sources that publish none (MIMIC, IU X-ray, CinC).

A patient's split is a hash of the patient id, so it never depends on reading order, on which other
patients are present, or on the machine: the same patient lands in the same split in every run and in
every source that shares the id (MIMIC-IV-ECG and MIMIC-CXR share `subject_id`), and no patient
crosses splits.
"""

from __future__ import annotations

import hashlib

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)


def patient_split(patient_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
                  salt: str = "tribind-split-v1") -> str:
    """'train' / 'val' / 'test' for a patient id, in the given proportions."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    digest = hashlib.sha1(f"{salt}:{patient_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < fractions[0]:
        return "train"
    if position < fractions[0] + fractions[1]:
        return "val"
    return "test"
