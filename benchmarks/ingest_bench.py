"""Ingest: phantom cases/s through the service (embedding three modalities), and precomputed vectors/s.

Through the service: the client upserts over gRPC to a server on an empty library (phantom cases
in batches of 32 as `tribind ingest phantom` sends them; vectors 512 per request with 2 requests in
flight, as `tribind ingest vectors:FILE` does via `tribind.vector_sources.ingest_vector_source`).
Baselines, in the same run: the server's own upsert path called in-process (`TribindServicer._upsert`,
the same decode/embed/store code without gRPC) for phantom cases, and `CaseStore.upsert_many`
(10k cases per call) for vectors. Rendering phantom cases is done before the clock starts.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.library import synthetic_cases
from benchmarks.server_process import PRESET, served_model_version, start_server
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import ratio

PHANTOM_BATCH = 32      # tribind ingest's default --batch
VECTOR_BATCH = 512      # the server's per-request item limit


def phantom_messages(n: int) -> list:
    from tribind.service_commands import phantom_cases

    return list(phantom_cases(n, seed=0, start=2_000_000))


def phantom_in_process(messages: list, data_dir: Path) -> float:
    """cases/s of the server's upsert path without gRPC."""
    from service.config import ServerConfig
    from service.servicer import TribindServicer

    servicer = TribindServicer(ServerConfig(data_dir=data_dir, preset=PRESET, checkpoint=None))
    servicer.load()
    try:
        servicer._upsert(messages[:1], None)  # warm-up: first forward passes allocate and pick kernels
        start = time.perf_counter()
        for i in range(0, len(messages), PHANTOM_BATCH):
            servicer._upsert(messages[i:i + PHANTOM_BATCH], None)
        return len(messages) / (time.perf_counter() - start)
    finally:
        servicer.close()


def vectors_direct(vectors: np.ndarray, model_version: str, data_dir: Path, batch: int = 10_000) -> float:
    from index import CaseStore

    cases = [synthetic_cases(vectors[i:i + batch], model_version, start=i) for i in range(0, len(vectors), batch)]
    with CaseStore(data_dir, dim=vectors.shape[1], model_version=model_version) as store:
        start = time.perf_counter()
        for chunk in cases:
            store.upsert_many(chunk)
        return len(vectors) / (time.perf_counter() - start)


def write_vector_file(path: Path, vectors: np.ndarray) -> Path:
    np.save(path, vectors)
    return path


def vectors_over_grpc(target: str, path: Path, model_version: str, inflight: int = 2,
                      id_prefix: str = "vec-") -> tuple[float, int]:
    from service.client import TribindClient
    from tribind.vector_sources import ingest_vector_source, open_vector_source

    source = open_vector_source(f"vectors:{path}?modality=xray&model_version={model_version}&id_prefix={id_prefix}")
    with TribindClient(target, timeout_s=600) as client:
        client.wait_ready()
        start = time.perf_counter()
        written = ingest_vector_source(client, source, VECTOR_BATCH, inflight=inflight)
        return written / (time.perf_counter() - start), written


def phantom_over_grpc(target: str, messages: list) -> float:
    from service.client import TribindClient

    with TribindClient(target, timeout_s=600) as client:
        client.wait_ready()
        client.upsert(messages[:1])  # warm-up, as in-process
        start = time.perf_counter()
        for i in range(0, len(messages), PHANTOM_BATCH):
            client.upsert(messages[i:i + PHANTOM_BATCH])
        return len(messages) / (time.perf_counter() - start)


def run(config: BenchConfig, work_dir: Path | None = None) -> dict[str, Any]:
    model_version, dim = served_model_version()
    messages = phantom_messages(config.ingest_phantom_cases)
    vectors = clustered_unit_vectors(config.ingest_vectors, dim, seed=11)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        phantom_base = phantom_in_process(messages, root / "phantom-inproc")
        vector_base = vectors_direct(vectors, model_version, root / "vectors-direct")
        path = write_vector_file(root / "vectors.npy", vectors)
        server = start_server(root / "served")
        try:
            phantom_rate = phantom_over_grpc(server.target, messages)
            vector_rate, written = vectors_over_grpc(server.target, path, model_version)
            sequential_rate, _ = vectors_over_grpc(server.target, path, model_version, inflight=1, id_prefix="seq-")
        finally:
            server.stop()
    return {
        "phantom": {"cases": len(messages), "through_service_cases_per_s": round(phantom_rate, 2),
                    "baseline_in_process_cases_per_s": round(phantom_base, 2),
                    "ratio": ratio(phantom_rate, phantom_base),
                    "note": "each case: 128 px X-ray PNG, 12-lead ECG at 100 Hz, report; embedded by the tiny preset"},
        "vectors": {"vectors": written, "through_service_vectors_per_s": round(vector_rate, 1),
                    "through_service_sequential_vectors_per_s": round(sequential_rate, 1),
                    "baseline_direct_store_vectors_per_s": round(vector_base, 1),
                    "ratio": ratio(vector_rate, vector_base),
                    "note": f"{VECTOR_BATCH} per Upsert, 2 in flight (sequential: 1 in flight, new ids, library twice as big)"},
    }
