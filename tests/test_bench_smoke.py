"""The benchmark code paths at unit-test size: figures come out, JSON is written, the table prints."""

from __future__ import annotations

import json
import time

import numpy as np

from benchmarks import index_bench
from benchmarks.config import SMOKE
from benchmarks.report import table
from benchmarks.run import run
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import closed_loop, percentiles_ms, ratio


def test_closed_loop_counts_requests_and_latency():
    figures = closed_loop(lambda w, i: time.sleep(0.002), concurrency=4, duration_s=0.3, warmup_s=0.05)
    assert figures["concurrency"] == 4 and figures["errors"] == 0
    assert 4 * 0.3 / 0.02 < figures["requests"] <= 4 * 0.3 / 0.002 + 4  # 4 workers, >= 2 ms per call
    assert 2.0 <= figures["p50_ms"] <= figures["p99_ms"]
    assert percentiles_ms([0.001] * 99 + [0.1])["p50_ms"] == 1.0
    assert ratio(3.0, 2.0) == 1.5 and ratio(1.0, 0) is None


def test_synthetic_vectors_are_unit_and_clustered():
    x = clustered_unit_vectors(2000, 32, seed=1, clusters=10)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    other = clustered_unit_vectors(2000, 32, seed=2, clusters=10)
    assert not np.allclose(x[:5], other[:5])
    # around 10 shared centres: most pairs from the two draws share a centre far more often than chance
    best = (x[:200] @ other.T).max(axis=1)
    assert np.median(best) > 0.5


def test_recall_counts_overlap():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert index_bench.recall_at_k(np.array([[3, 2, 9], [-1, -1, -1]]), truth) == round((2 / 3 + 0) / 2, 4)


def test_quick_run_of_encoders_and_index_writes_results(tmp_path):
    out = tmp_path / "latest.json"
    results = run(SMOKE, only=("encoders", "index"), out=out, log=lambda m: None)
    saved = json.loads(out.read_text())
    assert set(saved) >= {"mode", "machine", "encoders", "index"} and saved["mode"] == "smoke"
    assert "error" not in saved["encoders"] and "error" not in saved["index"], saved
    for modality in ("xray", "ecg", "text"):
        assert all(v > 0 for v in saved["encoders"]["tiny_cpu"][modality].values())
    assert saved["encoders"]["gpu"]["device"] is None or saved["encoders"]["gpu"]["base"]
    kinds = saved["index"]["sizes"]["2000"]["kinds"]
    assert {k: v["kind"] for k, v in kinds.items()} == {"flat": "flat", "ivf": "ivf", "hnsw": "hnsw"}
    assert kinds["flat"]["recall_at_10"] == 1.0  # flat is exact: its recall checks the ground truth itself
    assert all(0 < v["recall_at_10"] <= 1 and v["single_query"]["p99_ms"] > 0 for v in kinds.values())
    printed = table(results)
    assert "index 2,000 ivf p50 (ms) vs bare FAISS call" in printed and "encoders tiny cpu text batch 4" in printed


def test_scale_bench_ingests_restarts_and_searches(tmp_path):
    """The 1M scale path at 3k vectors: ingest through gRPC, restart from the snapshot, cold and
    steady-state searches with recall against exact search, the in-process baseline."""
    from dataclasses import replace

    from benchmarks import scale_bench

    config = replace(SMOKE, scale_vectors=3000, scale_queries=20, scale_steady_queries=30)
    result = scale_bench.run(config, work_dir=tmp_path)
    assert result["vectors"] == 3000 and "flat" in result["index_kind"].split(",")
    for key in ("search_after_ingest", "search_after_restart", "search_steady", "baseline_in_process"):
        assert result[key]["recall_at_10"] == 1.0, key  # flat: exact
    assert result["search_after_restart"]["queries"] == 20 and result["search_steady"]["queries"] == 30
    assert 0 < result["search_steady"]["p50_ms"] <= result["search_steady"]["p99_ms"]
    assert result["baseline_in_process"]["load_report"]  # the restart loaded the snapshot
    assert set(result["targets"]) >= {"p99_under_5_ms", "steady_p99_under_5_ms", "restart_under_60_s"}
    assert "new queries after those" in table({"scale": result})
