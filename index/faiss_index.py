"""One FAISS index per modality, derived from SQLite: which kind, how it is built, searched and updated.

Kinds (inner product on unit vectors, ids = SQLite `vectors.vec_id`):
- flat: `IndexIDMap2(IndexFlatIP)`, exact; chosen below `flat_max_vectors`.
- ivf:  `IndexIVFFlat` over an `IndexFlatIP` quantizer, nlist ~ 4*sqrt(N), k-means on a sample. IVFFlat
        keeps the float32 vectors in its lists, so every candidate's score is the exact inner product
        (the "exact re-rank" is built in; only the choice of probed lists is approximate).
- hnsw: `IndexIDMap2(IndexHNSWFlat)`; only when asked for (kind="hnsw"). HNSW cannot remove vectors, so
        any removal rebuilds it before the write returns: a deleted vector is never findable.
Per-request search parameters (`SearchParametersIVF/HNSW`, selector) are built per call; the shared
index object is never reconfigured for a request.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexPolicy:
    """How the store chooses and tunes its FAISS indexes (config as data; tests shrink the thresholds)."""

    kind: str = "auto"                 # auto: flat below flat_max_vectors, else ivf
    flat_max_vectors: int = 50_000
    ivf_lists_per_sqrt_n: float = 4.0  # nlist = 4*sqrt(N) (FAISS guideline 4..16 sqrt(N))
    ivf_min_lists: int = 16
    ivf_train_per_list: int = 40       # k-means sample = nlist*40 (FAISS warns below 39 per centroid)
    ivf_kmeans_iters: int = 10
    nprobe: int = 32                   # default per request; a request may override it
    regrow_factor: float = 4.0         # retrain IVF once N exceeds 4x the N it was trained for
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    postfilter_max_candidates: int = 2048  # filtered search first post-filters up to this many candidates (0: never)
    exact_max_selected: int = 2048     # a filter selecting at most this many rows is answered by brute force
    background_nice: int = 10          # retraining aside runs this much nicer than searches (0: as nice); see index/thread_priority.py
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"IndexPolicy.kind must be one of {KINDS}, got {self.kind!r}")
        if not 0 <= self.background_nice <= 19:
            raise ValueError(f"IndexPolicy.background_nice must be 0..19 (a nice-value increment), got {self.background_nice}")

    def kind_for(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.flat_max_vectors else "ivf"

    def needs_rebuild(self, kind: str, trained_for: int, n: int, removing: bool) -> bool:
        """Whether an index of `kind` should be rebuilt from SQLite once it holds n vectors."""
        want = self.kind_for(n)
        if kind == "hnsw":
            return removing or want != "hnsw"
        if kind == want:
            return kind == "ivf" and n > self.regrow_factor * trained_for
        if kind == "ivf":  # hysteresis: do not flip between ivf and flat around the threshold
            return n < self.flat_max_vectors // 2
        return True

    def nlist_for(self, n: int) -> int:
        return max(self.ivf_min_lists, int(self.ivf_lists_per_sqrt_n * math.sqrt(max(n, 1))))


class ModalityIndex:
    """A FAISS index plus what the store needs to know about it; mutated only under the store's write lock."""

    def __init__(self, kind: str, index: faiss.Index, trained_for: int) -> None:
        self.kind = kind
        self.index = index
        self.trained_for = trained_for  # N the IVF quantizer was sized for (0 for flat/hnsw)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist) if self.kind == "ivf" else 0

    @classmethod
    def build(cls, policy: IndexPolicy, dim: int, ids: np.ndarray, vectors: np.ndarray) -> "ModalityIndex":
        n = len(ids)
        kind = policy.kind_for(n)
        if kind == "ivf":
            # k-means needs ~39 points per centroid to place it well; tiny sets fall back to flat.
            nlist = min(policy.nlist_for(n), n // 39)
            if nlist < 2:
                kind = "flat"
        if kind == "flat":
            built = cls("flat", faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), 0)
        elif kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(dim, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = policy.hnsw_ef_construction
            hnsw.hnsw.efSearch = policy.hnsw_ef_search
            built = cls("hnsw", faiss.IndexIDMap2(hnsw), 0)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.own_fields = True
            quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
            ivf.cp.niter = policy.ivf_kmeans_iters
            ivf.cp.seed = policy.seed
            ivf.cp.max_points_per_centroid = policy.ivf_train_per_list
            sample = min(n, nlist * policy.ivf_train_per_list)
            rng = np.random.default_rng(policy.seed)
            rows = np.sort(rng.choice(n, size=sample, replace=False)) if sample < n else slice(None)
            ivf.train(np.ascontiguousarray(vectors[rows]))
            ivf.nprobe = policy.nprobe
            built = cls("ivf", ivf, n)
        if n:
            built.add(ids, vectors)
        return built

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add_with_ids(vectors, ids)

    def assign(self, vectors: np.ndarray) -> np.ndarray | None:
        """IVF list of each vector, computed without touching the index (safe beside searches)."""
        if self.kind != "ivf":
            return None
        _, lists = self.index.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        return np.ascontiguousarray(lists.ravel())

    def add_assigned(self, ids: np.ndarray, vectors: np.ndarray, lists: np.ndarray | None) -> None:
        """Add with lists from `assign`, so the write lock is held only for the copy into the lists."""
        if lists is None:
            self.add(ids, vectors)
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # swig_ptr does not keep its array alive: every array is bound to a name for the call.
        self.index.add_core(len(ids), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(lists))

    def remove(self, ids: np.ndarray) -> int:
        if self.kind == "hnsw":
            raise RuntimeError("HNSW cannot remove vectors; rebuild the index instead")
        return int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))

    def search(self, query: np.ndarray, k: int, *, selector: faiss.IDSelector | None = None,
               nprobe: int | None = None, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query; -1 ids pad when fewer were found."""
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=min(nprobe or self.index.nprobe, self.nlist))
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(ef_search or 0, k))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        k = max(1, min(k, self.ntotal))
        with single_threaded():
            scores, ids = self.index.search(query.reshape(1, -1), k, params=params)
        return scores[0], ids[0]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run one query on the calling thread's OpenMP team of one.

    A single query gains nothing from an OpenMP team but pays for waking it: on 2 busy cores a flat
    search over 100k vectors took p50 73 ms / p99 232 ms with 2 threads and 15 / 28 ms with 1
    (benchmarks/index_bench.py). Concurrent requests already use the cores, one thread each. The
    setting is per thread (an OpenMP ICV), so builds on other threads keep every core; restored after.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
