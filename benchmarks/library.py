"""A case library of N synthetic vectors written straight into a `CaseStore`, for the served model.

The service benchmarks need a library of a given size behind the server; embedding N phantom cases
would take hours on 2 cores, so the library holds clustered synthetic vectors (see `synthetic`)
stamped with the served model's version, with labels, a patient and metadata like real cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.synthetic import clustered_unit_vectors

LABELS = ("cardiomegaly", "pleural_effusion_left", "atrial_fibrillation", "lvh", "normal")


def synthetic_cases(vectors: np.ndarray, model_version: str, modality: str = "xray", start: int = 0) -> list:
    from index import Case, Embedding

    return [Case(f"syn-{start + i}", f"p{(start + i) // 3}", f"2180-{(start + i) % 12 + 1:02d}-01T08:00:00",
                 (LABELS[(start + i) % len(LABELS)],), {"site": "ABC"[(start + i) % 3]},
                 {modality: Embedding(vector, model_version)})
            for i, vector in enumerate(vectors)]


def batches(n: int, dim: int, batch: int, seed: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, n, batch):
        yield start, clustered_unit_vectors(min(batch, n - start), dim, seed=seed * 1_000_003 + start)


def build_library(data_dir: Path, n: int, model_version: str, dim: int, batch: int = 10_000):
    """An open CaseStore at `data_dir` holding n xray vectors (ids syn-0..syn-{n-1}); the caller closes it."""
    from index import CaseStore

    store = CaseStore(data_dir, dim=dim, model_version=model_version)
    for start, vectors in batches(n, dim, batch):
        store.upsert_many(synthetic_cases(vectors, model_version, start=start))
    store.wait_for_maintenance()
    return store
