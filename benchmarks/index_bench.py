"""Index kinds at 100k and 1M vectors of the model's dimension, each next to the bare FAISS call.

Per kind the store can choose (flat, ivf, hnsw) and size: build time as the store builds it
(`ModalityIndex.build`: k-means on a sample, then add), memory (the serialised index: FAISS keeps the
same bytes in RAM), single-query p50/p99 through the store's per-request search path
(`ModalityIndex.search`: per-call SearchParameters, never touching the shared index), batch QPS
(1,000 queries in one call) and recall@10 against exact search.

Baseline, in the same run: the bare FAISS call on the same index (`index.search(q, k)` with the
index's own settings) and exact brute force (`IndexFlatIP`), whose answers define recall. Single
queries run on one OpenMP thread (as the store runs them); batches use every thread.
The store's SQLite side (hit rows) is measured by the service and scale benchmarks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import percentiles_ms, ratio, time_calls

K = 10


def _index_bytes(index: Any) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def _single(index: Any, query: np.ndarray) -> Any:
    """The bare FAISS call for one query, on one OpenMP thread like the store's (see
    `index.faiss_index.single_threaded`: a 2-thread team makes one query several times slower on a busy host)."""
    from index.faiss_index import single_threaded

    with single_threaded():
        return index.search(query.reshape(1, -1), K)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) / t.shape[0] for f, t in zip(found, truth)]
    return round(float(np.mean(hits)), 4)


def measure_kind(kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                 n_single: int, policy_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    from index.faiss_index import IndexPolicy, ModalityIndex

    n, dim = vectors.shape
    policy = IndexPolicy(kind=kind, flat_max_vectors=min(50_000, n // 2), **(policy_overrides or {}))
    ids = np.arange(1, n + 1, dtype=np.int64)
    start = time.perf_counter()
    built = ModalityIndex.build(policy, dim, ids, vectors)
    build_s = time.perf_counter() - start
    single = time_calls(lambda i: built.search(queries[i % len(queries)], K, nprobe=policy.nprobe,
                                               ef_search=policy.hnsw_ef_search), n_single)
    bare = time_calls(lambda i: _single(built.index, queries[i % len(queries)]), n_single)
    batch = queries
    start = time.perf_counter()
    _, found = built.index.search(batch, K)
    batch_s = time.perf_counter() - start
    store_found = np.stack([built.search(q, K, nprobe=policy.nprobe, ef_search=policy.hnsw_ef_search)[1]
                            for q in queries[:min(len(queries), 200)]])
    result = {
        "kind": built.kind, "vectors": n, "build_s": round(build_s, 2),
        "memory_mb": round(_index_bytes(built.index) / 2**20, 1),
        "single_query": percentiles_ms(single),
        "bare_faiss_single_query": percentiles_ms(bare),
        "batch_qps": round(len(batch) / batch_s, 1),
        "recall_at_10": recall_at_k(store_found, truth[:len(store_found)]),
        "bare_faiss_recall_at_10": recall_at_k(found, truth),
    }
    if built.kind == "ivf":
        result.update(nlist=built.nlist, nprobe=policy.nprobe)
    if built.kind == "hnsw":
        result.update(M=policy.hnsw_m, ef_search=policy.hnsw_ef_search, ef_construction=policy.hnsw_ef_construction)
    result["p50_vs_bare"] = ratio(result["single_query"]["p50_ms"], result["bare_faiss_single_query"]["p50_ms"])
    return result


def exact_baseline(vectors: np.ndarray, queries: np.ndarray, n_single: int) -> tuple[dict[str, Any], np.ndarray]:
    """Brute force with a bare `IndexFlatIP`: the ground truth and the floor every kind is compared to."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    start = time.perf_counter()
    _, truth = flat.search(queries, K)
    batch_s = time.perf_counter() - start
    single = time_calls(lambda i: _single(flat, queries[i % len(queries)]), n_single)
    return {"kind": "bare IndexFlatIP (exact)", "vectors": len(vectors), "single_query": percentiles_ms(single),
            "batch_qps": round(len(queries) / batch_s, 1),
            "memory_mb": round(vectors.nbytes / 2**20, 1)}, truth + 1  # store ids are row + 1


def run(config: BenchConfig, dim: int = 256) -> dict[str, Any]:
    import faiss

    result: dict[str, Any] = {"dim": dim, "k": K, "faiss_threads": faiss.omp_get_max_threads(),
                              "data": "clustered synthetic unit vectors (1000 centres, cosine to centre ~0.71)",
                              "sizes": {}}
    for n in config.index_sizes:
        vectors = clustered_unit_vectors(n, dim, seed=1)
        queries = clustered_unit_vectors(config.index_batch_queries, dim, seed=2)
        n_single_exact = max(5, config.index_queries // 10)
        baseline, truth = exact_baseline(vectors, queries, n_single_exact)
        per_kind: dict[str, Any] = {}
        for kind in config.index_kinds:
            if kind == "hnsw" and n > config.hnsw_max_vectors:
                per_kind[kind] = {"skipped": f"HNSW build above {config.hnsw_max_vectors:,} vectors is too slow for "
                                             "this run (the store uses HNSW only when asked for)"}
                continue
            samples = n_single_exact if kind == "flat" else config.index_queries
            per_kind[kind] = measure_kind(kind, vectors, queries, truth, samples)
            per_kind[kind]["p50_vs_exact_baseline"] = ratio(per_kind[kind]["single_query"]["p50_ms"],
                                                            baseline["single_query"]["p50_ms"])
            per_kind[kind]["batch_qps_vs_exact_baseline"] = ratio(per_kind[kind]["batch_qps"], baseline["batch_qps"])
        result["sizes"][str(n)] = {"baseline": baseline, "kinds": per_kind}
        del vectors
    return result
