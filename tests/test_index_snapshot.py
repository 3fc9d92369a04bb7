"""Snapshots and restart: sound snapshots load and catch up, stale/corrupt ones rebuild, commits survive kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from index import CaseStore, IndexPolicy
from index.snapshot import index_path, sidecar_path
from index_helpers import DIM, VERSION, make_cases, unit_vectors

REPO = Path(__file__).resolve().parents[1]
POLICY = IndexPolicy(flat_max_vectors=300, nprobe=8)


def _open(path: Path, version: str = VERSION) -> CaseStore:
    return CaseStore(path, dim=DIM, model_version=version, policy=POLICY)


def _top_ids(store: CaseStore, queries: np.ndarray) -> list[list[str]]:
    return [[h.case_id for h in store.search("xray", q, k=5, nprobe=64).hits] for q in queries]


def test_snapshot_is_atomic_and_sound(tmp_path):
    with _open(tmp_path) as store:
        store.upsert_many(make_cases(unit_vectors(600)))
        written = store.snapshot()
    folder = tmp_path / "faiss"
    assert not list(folder.glob("*.tmp"))
    side = json.loads(sidecar_path(folder, "xray").read_text())
    assert side["count"] == 600 and side["kind"] == "ivf" and side["model_version"] == VERSION
    assert side["size"] == index_path(folder, "xray").stat().st_size == written["xray"].size
    with _open(tmp_path) as again:
        assert again.load_report["xray"].startswith("snapshot")


def test_restart_catches_up_with_writes_after_the_snapshot(tmp_path):
    vectors = unit_vectors(800, seed=3, clusters=8)
    queries = unit_vectors(5, seed=4)
    with _open(tmp_path) as store:
        store.upsert_many(make_cases(vectors[:600]))
        store.snapshot()
        store.upsert_many(make_cases(vectors[600:], start=600))
        store.delete(["c1", "c2", "c700"])
        expected = _top_ids(store, queries)
        store.close(snapshot=False)  # as if killed: FAISS on disk lags SQLite
    with _open(tmp_path) as again:
        assert again.load_report["xray"] == "snapshot (+199 added, -2 removed since)"  # c700 came and went
        assert _top_ids(again, queries) == expected
        assert again.stats().modalities["xray"].indexed == 797


@pytest.mark.parametrize("damage", ["truncate", "drop_sidecar", "old_snapshot"])
def test_restart_rebuilds_a_damaged_or_stale_snapshot(tmp_path, damage):
    vectors = unit_vectors(500, seed=5)
    queries = unit_vectors(5, seed=6)
    folder = tmp_path / "faiss"
    with _open(tmp_path) as store:
        store.upsert_many(make_cases(vectors))
        store.snapshot()
        old = {p.name: p.read_bytes() for p in folder.iterdir()}
        store.delete([f"c{i}" for i in range(0, 500, 5)])
        store.snapshot()  # prunes the removal log the old snapshot would need
        expected = _top_ids(store, queries)
    if damage == "truncate":
        path = index_path(folder, "xray")
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "drop_sidecar":
        sidecar_path(folder, "xray").unlink()
    else:  # an older, internally sound snapshot restored over the current one: counts disagree
        for name, data in old.items():
            (folder / name).write_bytes(data)
    with _open(tmp_path) as again:
        assert again.load_report["xray"].startswith("rebuilt"), again.load_report
        assert _top_ids(again, queries) == expected
        assert again.stats().modalities["xray"].indexed == 400


def test_restart_with_another_model_version_rebuilds(tmp_path):
    with _open(tmp_path) as store:
        store.upsert_many(make_cases(unit_vectors(50)))
    with _open(tmp_path, version="model-v2") as store:
        assert store.load_report["xray"].startswith("rebuilt: snapshot is of model_version")
        stats = store.stats().modalities["xray"]
        assert stats.vectors == 0 and stats.indexed == 0 and stats.stale == {VERSION: 50}


def test_acknowledged_upsert_survives_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from index import CaseStore
        from index_helpers import make_cases, unit_vectors
        store = CaseStore({str(tmp_path)!r}, dim={DIM}, model_version={VERSION!r})
        store.upsert_many(make_cases(unit_vectors(40)))
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "acknowledged" in proc.stdout, proc.stderr
    with CaseStore(tmp_path, dim=DIM, model_version=VERSION) as store:
        assert store.stats().cases == 40
        assert store.load_report["xray"] == "rebuilt: no snapshot"
        query = unit_vectors(40)[7]
        assert store.search("xray", query, k=1).hits[0].case_id == "c7"
