"""Benchmark sizes as data: the full run (`make bench`) and the quick one (`make bench QUICK=1`, <= 3 min).

Only sizes and repetitions differ; the quick run goes through exactly the same code paths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchConfig:
    name: str
    # encoders: items/s per modality of the tiny preset on CPU at these batch sizes
    encoder_batches: tuple[int, ...] = (1, 8, 32, 64)
    encoder_min_seconds: float = 2.0          # time each (modality, batch) for at least this long
    # index: sizes, queries, and which kinds at which sizes (HNSW's 1M build is many minutes on 2 cores)
    index_sizes: tuple[int, ...] = (100_000, 1_000_000)
    index_kinds: tuple[str, ...] = ("flat", "ivf", "hnsw")
    hnsw_max_vectors: int = 100_000
    index_queries: int = 200                  # single-query latency samples per kind (flat: a tenth)
    index_batch_queries: int = 1000           # queries per batch-QPS call
    # service: library size behind the server, seconds per concurrency level
    service_library: int = 100_000
    service_concurrency: tuple[int, ...] = (1, 4, 16)
    service_seconds: float = 5.0
    xray_seconds: float = 8.0
    # ingest: phantom cases through the service, precomputed vectors through the service
    ingest_phantom_cases: int = 256
    ingest_vectors: int = 100_000
    # scale: 1M precomputed vectors into a served store, restart, search (None: skipped)
    scale_vectors: int | None = 1_000_000
    scale_queries: int = 500                  # first queries after the restart (cold)
    scale_steady_queries: int = 2000          # then new queries (steady state); p99 from 2000 is 20th-worst


FULL = BenchConfig("full")

QUICK = BenchConfig(
    "quick",
    encoder_batches=(1, 8, 32),
    encoder_min_seconds=0.4,
    index_sizes=(20_000,),
    hnsw_max_vectors=20_000,
    index_queries=60,
    index_batch_queries=200,
    service_library=20_000,
    service_concurrency=(1, 4, 16),
    service_seconds=1.5,
    xray_seconds=2.5,
    ingest_phantom_cases=32,
    ingest_vectors=10_000,
    scale_vectors=None,
)

# Unit-test size: every code path in seconds (tests/test_bench_*.py).
SMOKE = BenchConfig(
    "smoke",
    encoder_batches=(1, 4),
    encoder_min_seconds=0.05,
    index_sizes=(2_000,),
    hnsw_max_vectors=2_000,
    index_queries=10,
    index_batch_queries=50,
    service_library=2_000,
    service_concurrency=(1, 4),
    service_seconds=0.3,
    xray_seconds=0.5,
    ingest_phantom_cases=4,
    ingest_vectors=600,
    scale_vectors=None,
)

CONFIGS = {c.name: c for c in (FULL, QUICK, SMOKE)}
