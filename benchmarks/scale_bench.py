"""Scale: 1M precomputed vectors ingested through the service, searched, restarted, searched again.

1. write N clustered unit vectors (the model's dim) to one `.npy` (ids from the row number);
2. start a server on an empty library and ingest the file as `tribind ingest vectors:FILE` does
   (`ingest_vector_source`: 512 per Upsert, 2 in flight); time it, and the server's peak memory;
3. search-by-vector over gRPC at concurrency 1: p50/p99 and recall@10 against exact search
   (brute force over the same file in this process);
4. stop (SIGTERM: drain, snapshot), restart, time to SERVING; search again: first the same queries
   (cold: the first requests after the restart fill SQLite's page cache and the hit cache), then
   `scale_steady_queries` new ones (steady state; their hits mostly miss the hit cache, as a new
   user's queries would);
5. the bare in-process baseline: open the store in this process and time `CaseStore.search`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.index_bench import recall_at_k
from benchmarks.server_process import served_model_version, start_server
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import percentiles_ms, ratio, time_calls

TARGETS = {"ingest_s": 600.0, "memory_gb": 8.0, "recall_at_10": 0.95, "p99_ms": 5.0, "restart_s": 60.0}


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), MB."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def write_vectors(path: Path, n: int, dim: int, chunk: int = 100_000) -> np.ndarray:
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, chunk):
        matrix[start:start + chunk] = clustered_unit_vectors(min(chunk, n - start), dim, seed=100 + start // chunk)
    matrix.flush()
    return np.load(path, mmap_mode="r")


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), 200_000):
        flat.add(np.ascontiguousarray(vectors[start:start + 200_000]))
    _, rows = flat.search(queries, 10)
    return rows


def grpc_search(target: str, queries: np.ndarray, model_version: str) -> tuple[dict[str, float], np.ndarray]:
    from service.client import TribindClient
    from service.client_types import vector

    messages = [vector(q, "xray", model_version) for q in queries]
    found: list[list[int]] = []
    with TribindClient(target, timeout_s=60) as client:
        client.wait_ready()
        latencies = time_calls(lambda i: found.append(
            [int(h.case_id.rsplit("-", 1)[1]) for h in client.search(messages[i], targets=["xray"], k=10).hits]),
            len(messages), warmup=0)
    return percentiles_ms(latencies), np.array([f + [-1] * (10 - len(f)) for f in found])


def run(config: BenchConfig, work_dir: Path | None = None) -> dict[str, Any]:
    from tribind.vector_sources import ingest_vector_source, open_vector_source
    from service.client import TribindClient

    n = config.scale_vectors
    if not n:
        return {"skipped": f"not part of the {config.name} run (make bench runs it)"}
    model_version, dim = served_model_version()
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench-scale-") as tmp:
        root = Path(tmp)
        vectors = write_vectors(root / "vectors.npy", n, dim)
        queries = clustered_unit_vectors(config.scale_queries, dim, seed=99)
        steady_queries = clustered_unit_vectors(config.scale_steady_queries, dim, seed=98)
        truth, steady_truth = np.split(exact_top10(vectors, np.concatenate([queries, steady_queries])), [len(queries)])
        data_dir = root / "library"
        server = start_server(data_dir)
        try:
            source = open_vector_source(f"vectors:{root / 'vectors.npy'}?modality=xray&model_version={model_version}&id_prefix=v-")
            with TribindClient(server.target, timeout_s=600) as client:
                start = time.perf_counter()
                written = ingest_vector_source(client, source, 512, inflight=2)
                ingest_s = time.perf_counter() - start
                kind = client.stats().index_kind
            first, found = grpc_search(server.target, queries, model_version)
            first_recall = recall_at_k(found, truth)
            server_peak_mb = _vm_hwm_mb(server.process.pid)
        finally:
            stop_s = server.stop(timeout_s=900)
        restarted = start_server(data_dir)
        try:
            second, found = grpc_search(restarted.target, queries, model_version)
            second_recall = recall_at_k(found, truth)
            steady, found = grpc_search(restarted.target, steady_queries, model_version)
            steady_recall = recall_at_k(found, steady_truth)
        finally:
            restarted.stop(timeout_s=900)
        from index import CaseStore

        start = time.perf_counter()
        store = CaseStore(data_dir, dim=dim, model_version=model_version)
        open_s = time.perf_counter() - start
        store_found: list[list[int]] = []
        base = time_calls(lambda i: store_found.append(
            [int(h.case_id.rsplit("-", 1)[1]) for h in store.search("xray", queries[i], k=10).hits]), len(queries), warmup=0)
        base_recall = recall_at_k(np.array(store_found), truth)
        load_report = dict(store.load_report)
        store.close(snapshot=False)
    p99, steady_p99 = second["p99_ms"], steady["p99_ms"]
    return {
        "vectors": written, "dim": dim, "index_kind": kind,
        "ingest_s": round(ingest_s, 1), "ingest_vectors_per_s": round(written / ingest_s, 1),
        "server_peak_rss_mb": server_peak_mb, "stop_s": round(stop_s, 1),
        "search_after_ingest": {**first, "recall_at_10": first_recall},
        "restart_to_serving_s": round(restarted.ready_s, 1),
        "search_after_restart": {**second, "recall_at_10": second_recall, "queries": len(queries)},
        "search_steady": {**steady, "recall_at_10": steady_recall, "queries": len(steady_queries)},
        "baseline_in_process": {**percentiles_ms(base), "recall_at_10": base_recall, "store_open_s": round(open_s, 1),
                                "load_report": load_report},
        "p99_vs_in_process": ratio(p99, percentiles_ms(base)["p99_ms"]),
        "targets": {
            "ingest_under_10_min": ingest_s <= TARGETS["ingest_s"],
            "memory_under_8_gb": server_peak_mb <= TARGETS["memory_gb"] * 1024,
            "recall_at_10_at_least_0.95": second_recall >= TARGETS["recall_at_10"],
            "p99_under_5_ms": p99 <= TARGETS["p99_ms"],
            "p99_under_2_ms": p99 <= 2.0,
            "steady_p99_under_5_ms": steady_p99 <= TARGETS["p99_ms"],
            "steady_p99_under_2_ms": steady_p99 <= 2.0,
            "restart_under_60_s": restarted.ready_s <= TARGETS["restart_s"],
        },
    }
