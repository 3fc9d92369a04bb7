"""FAISS side of the case store: index kinds, deletes never findable, IVF recall, filters on IVF, concurrency."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index import CaseStore, IndexPolicy, SearchFilter
from index_helpers import DIM, VERSION, make_cases, unit_vectors

POLICIES = {
    "flat": IndexPolicy(),
    "ivf": IndexPolicy(flat_max_vectors=500, nprobe=8),
    "hnsw": IndexPolicy(kind="hnsw", hnsw_m=16),
}


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_deleted_and_replaced_vectors_are_never_findable(tmp_path, kind):
    vectors = unit_vectors(2000, seed=11, clusters=20)
    with CaseStore(tmp_path / kind, dim=DIM, model_version=VERSION, policy=POLICIES[kind]) as store:
        store.upsert_many(make_cases(vectors))
        assert store.stats().modalities["xray"].index_kind == kind
        victims = [f"c{i}" for i in range(0, 2000, 37)]
        store.delete(victims)
        replaced = make_cases(unit_vectors(5, seed=12), start=1)  # c1..c5 get new vectors
        store.upsert_many(replaced)
        assert store.stats().modalities["xray"].indexed == 2000 - len(victims)
        for i in list(range(0, 2000, 37))[:20] + [1, 2, 3]:
            hits = store.search("xray", vectors[i], k=5, nprobe=64).hits
            found = [h.case_id for h in hits if h.score > 0.9999]
            assert found == [], f"deleted/replaced vector of c{i} still findable: {found}"
        # nothing deleted comes back even when paging through everything
        everything = store.search("xray", vectors[0], k=1000, offset=0, nprobe=64).hits
        assert not set(victims) & {h.case_id for h in everything}


def test_ivf_recall_against_exact(tmp_path):
    vectors = unit_vectors(6000, seed=21, clusters=60)
    queries = unit_vectors(50, seed=22, clusters=60)
    policy = IndexPolicy(flat_max_vectors=1000, nprobe=8)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        for start in range(0, 6000, 2000):  # crosses flat -> ivf on the way, then grows it
            store.upsert_many(make_cases(vectors[start:start + 2000], start=start))
        index = store._indexes["xray"]
        assert index.kind == "ivf" and index.nlist == 2000 // 39  # sized at 2000, not yet regrown
        recalls = []
        for q in queries:
            truth = set(np.argsort(-(vectors @ q))[:10])
            hits = store.search("xray", q, k=10).hits
            recalls.append(len(truth & {int(h.case_id[1:]) for h in hits}) / 10)
        assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_selective_filter_on_ivf_is_exact(tmp_path):
    vectors = unit_vectors(3000, seed=31, clusters=30)
    policy = IndexPolicy(flat_max_vectors=500, nprobe=2, exact_max_selected=20, postfilter_max_candidates=0)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors))
        query = unit_vectors(1, seed=32)[0]
        rare = [i for i in range(3000) if i % 50 == 0]            # 60 rows: the IDSelector plan
        result = store.search("xray", query, k=10, filter=SearchFilter(labels_any=("rare",)))
        assert result.plan == "ivf+selector" and result.selected == 60
        truth = sorted(rare, key=lambda i: -float(vectors[i] @ query))[:10]
        assert [h.case_id for h in result.hits] == [f"c{i}" for i in truth]
        few = store.search("xray", query, k=10, filter=SearchFilter(patient_in=("p3",), labels_all=("rare",)))
        assert few.plan == "exact-subset"
        assert {h.case_id for h in few.hits} == {f"c{i}" for i in rare if i % 7 == 3}


def test_broad_filter_is_post_filtered_and_selective_one_falls_back(tmp_path):
    vectors = unit_vectors(3000, seed=33, clusters=30)
    policy = IndexPolicy(flat_max_vectors=500, nprobe=4, exact_max_selected=20, postfilter_max_candidates=500)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors))
        query = unit_vectors(1, seed=34)[0]
        others = store.search("xray", query, k=10, nprobe=10_000,  # all lists: the answer is exact
                              filter=SearchFilter(patient_not_in=("p0", "p1"), exclude_case_ids=("c5",)))
        assert others.plan == "ivf+postfilter"
        truth = sorted((i for i in range(3000) if i % 7 > 1 and i != 5), key=lambda i: -float(vectors[i] @ query))
        assert [h.case_id for h in others.hits] == [f"c{i}" for i in truth[:10]]
        nothing = store.search("xray", query, k=10, filter=SearchFilter(labels_none=("odd", "even")))
        assert nothing.plan == "exact-subset" and nothing.hits == []  # post-filter gave up, the probe found none
        rare = store.search("xray", query, k=10, nprobe=10_000, filter=SearchFilter(labels_any=("rare",)))
        assert rare.plan == "ivf+selector" and rare.selected == 60
        truth = sorted(range(0, 3000, 50), key=lambda i: -float(vectors[i] @ query))
        assert [h.case_id for h in rare.hits] == [f"c{i}" for i in truth[:10]]


def test_grouping_returns_k_on_ivf_when_k_qualify(tmp_path):
    vectors = unit_vectors(1500, seed=41, clusters=10)
    policy = IndexPolicy(flat_max_vectors=500, nprobe=1)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors))
        hits = store.search("xray", vectors[0], k=7, group_by_patient=True).hits
        assert len(hits) == 7 and len({h.patient_id for h in hits}) == 7


def test_concurrent_search_during_upsert(tmp_path):
    vectors = unit_vectors(4000, seed=51, clusters=20)
    policy = IndexPolicy(flat_max_vectors=1000, nprobe=8)
    errors: list[BaseException] = []
    stop = threading.Event()
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors[:1000]))
        searches = [0]

        def searcher(seed: int) -> None:
            queries = unit_vectors(20, seed=seed)
            try:
                while not stop.is_set():
                    for q in queries:
                        hits = store.search("xray", q, k=10, filter=SearchFilter(labels_none=("rare",)) if seed % 2 else None).hits
                        assert len(hits) == 10 and all(h.score <= 1.0001 for h in hits)
                        searches[0] += 1
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=searcher, args=(s,)) for s in (1, 2)]
        for t in threads:
            t.start()
        try:
            for start in range(1000, 4000, 500):
                store.upsert_many(make_cases(vectors[start:start + 500], start=start))
                store.delete([f"c{start - 1}"])
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]
        assert searches[0] > 0
        assert store.stats().modalities["xray"].indexed == 4000 - 6
