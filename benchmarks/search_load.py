"""Search-by-vector over gRPC against the in-process baselines, in one run (for profiling the Search path).

    python -m benchmarks.search_load --library /tmp/perf/lib --vectors 20000 --seconds 5 [--concurrency 1 16]
    python -m benchmarks.search_load --target 127.0.0.1:PORT --seconds 30 --concurrency 16   # load only

The library is built once at `--library` (reused when it already holds the vectors); the server runs
as a child process (as in `service_bench`) unless `--target` names a running one, which a profiler
(`py-spy record --pid`) can then watch. Prints one JSON object: QPS and p50/p99 per concurrency for
gRPC, `CaseStore.search` and the bare FAISS call, with the ratios and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.server_process import served_model_version, start_server
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import closed_loop, ratio


def grpc_load(target: str, queries, model_version: str, concurrency: tuple[int, ...], seconds: float) -> dict[str, Any]:
    from service.client import TribindClient
    from service.client_types import vector

    messages = [vector(q, "xray", model_version) for q in queries[:512]]
    out = {}
    with TribindClient(target, timeout_s=60) as client:
        client.wait_ready()
        for c in concurrency:
            out[str(c)] = closed_loop(
                lambda w, i: client.search(messages[(w * 7919 + i) % len(messages)], targets=["xray"], k=10),
                c, seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=Path, default=Path("/tmp/tribind-search-load"))
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--target", default=None, help="load a running server instead (no baselines)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model_version, dim = served_model_version()
    queries = clustered_unit_vectors(2000, dim, seed=7)
    concurrency = tuple(args.concurrency)
    result: dict[str, Any] = {"load_average_start": os.getloadavg()}
    if args.target:
        result["grpc"] = grpc_load(args.target, queries, model_version, concurrency, args.seconds)
    else:
        from benchmarks.library import build_library
        from benchmarks.service_bench import in_process
        from index import CaseStore

        if (args.library / "cases.sqlite3").exists():
            store = CaseStore(args.library, dim=dim, model_version=model_version)
        else:
            store = build_library(args.library, args.vectors, model_version, dim)
        result["vectors"] = store.stats().modalities["xray"].vectors
        result["index_kind"] = store.stats().modalities["xray"].index_kind
        if not args.no_baseline:
            config = BenchConfig("search_load", service_concurrency=concurrency, service_seconds=args.seconds)
            result["baseline"] = in_process(store, queries, config)
        store.close()
        server = start_server(args.library, workers=args.workers)
        try:
            result["grpc"] = grpc_load(server.target, queries, model_version, concurrency, args.seconds)
        finally:
            server.stop()
        if not args.no_baseline:
            result["ratios"] = {
                f"c{c}": {"vs_store": ratio(result["grpc"][str(c)]["qps"], result["baseline"]["store_search"][str(c)]["qps"]),
                          "vs_bare_faiss": ratio(result["grpc"][str(c)]["qps"], result["baseline"]["bare_faiss"][str(c)]["qps"])}
                for c in concurrency}
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
