"""An IVF index that outgrows its training size is retrained aside: writes and searches go on meanwhile."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_helpers import DIM, VERSION, make_cases, unit_vectors  # noqa: E402

from index import CaseStore, IndexPolicy  # noqa: E402
from index import store as store_module  # noqa: E402

POLICY = IndexPolicy(flat_max_vectors=200, ivf_min_lists=2, nprobe=64)


def test_regrowth_runs_aside_and_catches_up_with_writes_made_meanwhile(tmp_path, monkeypatch):
    vectors = unit_vectors(2200, seed=5, clusters=20)
    release = threading.Event()
    entered = threading.Event()
    real_build = store_module.ModalityIndex.build

    def gated_build(policy, dim, ids, vecs):
        if threading.current_thread().name.startswith("regrow"):
            entered.set()
            assert release.wait(60), "test never released the background build"
        return real_build(policy, dim, ids, vecs)

    monkeypatch.setattr(store_module.ModalityIndex, "build", staticmethod(gated_build))
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        store.upsert_many(make_cases(vectors[:400]))
        assert store._indexes["xray"].kind == "ivf" and store._indexes["xray"].trained_for == 400
        store.upsert_many(make_cases(vectors[400:1700], start=400))  # > 4 x 400: retrain, but not here
        assert entered.wait(30)
        old = store._indexes["xray"]
        assert old.trained_for == 400 and old.ntotal == 1700  # the write was applied to the current index
        # writes and searches while the new index is being built
        store.upsert_many(make_cases(vectors[1700:2200], start=1700))
        store.delete([f"c{i}" for i in range(0, 2200, 10)])
        store.snapshot()  # must keep the removal log the build still needs
        hit = store.search("xray", vectors[3], k=1).hits[0]
        assert hit.case_id == "c3" and hit.score > 0.999
        release.set()
        assert store.wait_for_maintenance(60)
        new = store._indexes["xray"]
        assert new is not old and new.trained_for == 1700
        assert new.ntotal == store.stats().modalities["xray"].vectors == 2200 - 220
        for i in (0, 10, 1710, 2190):  # deleted before the swap: never findable
            assert all(h.case_id != f"c{i}" for h in store.search("xray", vectors[i], k=5).hits)
        for i in (1, 1711, 2199):  # added before and during the build: found
            assert store.search("xray", vectors[i], k=1).hits[0].case_id == f"c{i}"


def test_a_store_reopened_past_its_training_size_serves_at_once_and_retrains_aside(tmp_path):
    vectors = unit_vectors(1800, seed=6, clusters=20)
    policy = IndexPolicy(flat_max_vectors=200, ivf_min_lists=2, regrow_factor=1000.0)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors[:400]))
        store.upsert_many(make_cases(vectors[400:], start=400))  # never regrown under this policy
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        assert "retraining ivf for 1800 vectors aside" in store.load_report["xray"]
        assert store.search("xray", vectors[7], k=1).hits[0].case_id == "c7"
        assert store.wait_for_maintenance(60)
        assert store._indexes["xray"].trained_for == 1800
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        assert store.load_report["xray"].startswith("snapshot (+0 added")  # the retrained index was snapshotted
        assert np.isclose(store.search("xray", vectors[9], k=1).hits[0].score, 1.0, atol=1e-5)


def test_an_index_outgrown_while_it_was_retrained_is_retrained_again(tmp_path, monkeypatch):
    """A bulk import from 400 to 7,500 vectors while the first retraining (for 1,700) ran: the first
    catches up without the write lock, swaps in, and, as 7,500 > 4 x 1,700, at once starts the next."""
    vectors = unit_vectors(7500, seed=7, clusters=20)
    release = threading.Event()
    real_build = store_module.ModalityIndex.build
    calls = []

    def gated_build(policy, dim, ids, vecs):
        if threading.current_thread().name.startswith("regrow"):
            calls.append(len(ids))
            if len(calls) == 1:
                assert release.wait(60)
        return real_build(policy, dim, ids, vecs)

    monkeypatch.setattr(store_module.ModalityIndex, "build", staticmethod(gated_build))
    monkeypatch.setattr(store_module, "LOCKED_CATCH_UP_MAX", 100)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        store.upsert_many(make_cases(vectors[:400]))
        store.upsert_many(make_cases(vectors[400:1700], start=400))
        for start in range(1700, 7500, 500):
            store.upsert_many(make_cases(vectors[start:start + 500], start=start))
        release.set()
        assert store.wait_for_maintenance(60)
        assert calls == [1700, 7500]
        index = store._indexes["xray"]
        assert index.trained_for == 7500 and index.ntotal == 7500
        assert store.search("xray", vectors[7499], k=1).hits[0].case_id == "c7499"


def _outgrown_library(path: Path, seed: int) -> None:
    """1,800 vectors in an IVF index trained for 400: reopened under POLICY, it retrains aside."""
    vectors = unit_vectors(1800, seed=seed, clusters=20)
    policy = IndexPolicy(flat_max_vectors=200, ivf_min_lists=2, regrow_factor=1000.0)
    with CaseStore(path, dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors[:400]))
        store.upsert_many(make_cases(vectors[400:], start=400))  # never regrown under this policy


def _gated_retraining(monkeypatch) -> threading.Event:
    """The background retraining waits for the returned event before it builds."""
    release = threading.Event()
    real_build = store_module.ModalityIndex.build

    def gated_build(policy, dim, ids, vecs):
        if threading.current_thread().name.startswith("regrow"):
            release.wait(60)
        return real_build(policy, dim, ids, vecs)

    monkeypatch.setattr(store_module.ModalityIndex, "build", staticmethod(gated_build))
    return release


def _serving(path: Path, retrain_wait_s: float):
    from service.config import ServerConfig
    from service.servicer import TribindServicer

    servicer = TribindServicer(ServerConfig(data_dir=path, retrain_wait_s=retrain_wait_s))
    servicer.store = CaseStore(path, dim=DIM, model_version=VERSION, policy=POLICY)
    assert "retraining ivf for 1800 vectors aside" in servicer.store.load_report["xray"]
    return servicer


def test_server_shutdown_lets_a_retraining_finish_so_the_next_start_does_not_repeat_it(tmp_path, monkeypatch):
    """SIGTERM path (TribindServicer.close): wait for the retraining aside, then snapshot the retrained index.

    Snapshotting at once (what close did before) kept the outgrown index, and every later start retrained
    1M vectors again while serving with a worse p99."""
    _outgrown_library(tmp_path / "s", seed=7)
    release = _gated_retraining(monkeypatch)
    servicer = _serving(tmp_path / "s", retrain_wait_s=60)
    threading.Timer(0.5, release.set).start()  # the retraining ends only after close() has begun
    servicer.close()
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        assert store.load_report["xray"].startswith("snapshot (+0 added")
        assert store._indexes["xray"].trained_for == 1800


def test_server_shutdown_does_not_wait_past_retrain_wait_s(tmp_path, monkeypatch):
    from service.config import ServerConfig

    _outgrown_library(tmp_path / "s", seed=8)
    release = _gated_retraining(monkeypatch)
    servicer = _serving(tmp_path / "s", retrain_wait_s=0.3)
    try:
        servicer.close()  # returns after ~0.3 s with the current (outgrown, correct) index snapshotted
    finally:
        release.set()
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=POLICY) as store:
        assert "retraining ivf for 1800 vectors aside" in store.load_report["xray"]  # not kept: retrains again
        assert store.search("xray", unit_vectors(1800, seed=8, clusters=20)[5], k=1).hits[0].case_id == "c5"
        assert store.wait_for_maintenance(60)
    with pytest.raises(ValueError, match="retrain_wait_s"):
        ServerConfig(data_dir=tmp_path / "s", retrain_wait_s=-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_retraining_aside_runs_nicer_than_the_threads_that_search(tmp_path, monkeypatch):
    import os

    vectors = unit_vectors(1700, seed=8, clusters=20)
    real_build = store_module.ModalityIndex.build
    seen: list[int] = []

    def recording_build(policy, dim, ids, vecs):
        if threading.current_thread().name.startswith("regrow"):
            seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real_build(policy, dim, ids, vecs)

    monkeypatch.setattr(store_module.ModalityIndex, "build", staticmethod(recording_build))
    main_nice = os.getpriority(os.PRIO_PROCESS, os.getpid())
    policy = IndexPolicy(flat_max_vectors=200, ivf_min_lists=2, nprobe=64, background_nice=7)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors[:400]))
        store.upsert_many(make_cases(vectors[400:], start=400))  # > 4 x 400: retrained aside
        assert store.wait_for_maintenance(60)
        assert store._indexes["xray"].trained_for == 1700
        assert seen == [min(19, main_nice + 7)]
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the caller is untouched
        assert store.search("xray", vectors[5], k=1).hits[0].case_id == "c5"


def test_background_nice_is_checked():
    with pytest.raises(ValueError, match="background_nice"):
        IndexPolicy(background_nice=25)
