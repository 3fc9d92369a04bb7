"""Embedding-like synthetic vectors for index and ingest benchmarks.

Uniform random unit vectors are the worst case for IVF (no cluster structure, so every list is as
likely as any other) and nothing like real embeddings, which crowd around findings and patient
types. We draw unit vectors around `clusters` random centres plus Gaussian noise of norm ~`spread`
(cosine to the centre ~ 1/sqrt(1 + spread^2): 0.71 at spread 1). Queries are drawn the same way but from
another seed, so no query is a stored vector.
"""

from __future__ import annotations

import numpy as np


def clustered_unit_vectors(n: int, dim: int, *, seed: int = 0, clusters: int = 1000, spread: float = 1.0,
                           chunk: int = 100_000, centre_seed: int = 12345) -> np.ndarray:
    """float32 [n, dim] unit vectors around `clusters` shared centres; `spread` ~ noise norm / centre norm."""
    centres = np.random.default_rng(centre_seed).standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    scale = spread / np.sqrt(dim)  # noise of norm ~spread, whatever the dim
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        x = centres[rng.integers(0, clusters, stop - start)]
        x = x + scale * rng.standard_normal((stop - start, dim)).astype(np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out
