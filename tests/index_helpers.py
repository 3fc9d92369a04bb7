"""Small builders shared by the index tests: random unit vectors and cases."""

from __future__ import annotations

import numpy as np

from index import Case, Embedding

DIM = 16
VERSION = "model-v1"


def unit_vectors(n: int, dim: int = DIM, seed: int = 0, clusters: int = 0) -> np.ndarray:
    """Random unit vectors; with clusters > 0, drawn around that many centres (IVF-friendly, like embeddings)."""
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        x = rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_cases(vectors: np.ndarray, modality: str = "xray", start: int = 0, version: str = VERSION) -> list[Case]:
    """Case i: patient p{i % 7}, label 'odd'/'even' (+ 'rare' every 50th), site A/B/C, a study day."""
    cases = []
    for j, vector in enumerate(vectors):
        i = start + j
        labels = ("odd",) if i % 2 else ("even",)
        if i % 50 == 0:
            labels += ("rare",)
        cases.append(Case(
            case_id=f"c{i}", patient_id=f"p{i % 7}", study_time=f"2020-01-{i % 28 + 1:02d}T08:00:00",
            labels=labels, metadata={"site": "ABC"[i % 3]},
            vectors={modality: Embedding(vector, version)},
        ))
    return cases
