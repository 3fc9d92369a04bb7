"""The store's hit payload cache (index.hit_cache): results equal SQLite's, and every write invalidates it.

The cache keeps a vector's case payload (case id, patient, time, labels, metadata) by vec_id. An
upsert that changes only labels/metadata keeps the vec_id (same vector bytes), so a stale entry
would show the old labels: these tests pin that upsert, delete and update_vectors drop it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from index import Case, CaseStore, Embedding, SearchFilter
from index.case_rows import hit_rows
from index.hit_cache import HitCache
from index_helpers import DIM, VERSION, make_cases, unit_vectors


@pytest.fixture()
def store(tmp_path):
    with CaseStore(tmp_path / "lib", dim=DIM, model_version=VERSION) as s:
        s.upsert_many(make_cases(unit_vectors(60, seed=3)))
        yield s


def _query(store: CaseStore, case_id: str) -> np.ndarray:
    return store.get(case_id).vectors["xray"].vector


def test_cached_hits_equal_uncached_hits(tmp_path):
    vectors = unit_vectors(80, seed=5)
    queries = unit_vectors(12, seed=6)
    with CaseStore(tmp_path / "a", dim=DIM, model_version=VERSION) as cached, \
            CaseStore(tmp_path / "b", dim=DIM, model_version=VERSION, hit_cache_size=0) as plain:
        for s in (cached, plain):
            s.upsert_many(make_cases(vectors))
        for round_ in range(2):  # the second round is answered from the cache
            for q in queries:
                for kwargs in ({"k": 10}, {"k": 5, "offset": 3}, {"k": 7, "group_by_patient": True},
                               {"k": 10, "score_threshold": 0.2},
                               {"k": 4, "filter": SearchFilter(labels_any=("rare",))},
                               {"k": 6, "filter": SearchFilter(labels_none=("odd",))}):
                    assert cached.search("xray", q, **kwargs) == plain.search("xray", q, **kwargs), (round_, kwargs)
        assert len(cached._hits) > 0 and len(plain._hits) == 0


def test_upsert_of_labels_and_metadata_invalidates(store):
    q = _query(store, "c4")
    assert store.search("xray", q, k=1).hits[0].labels == ("even",)  # now cached
    old = store.get("c4")
    store.upsert(Case("c4", "p-new", "2021-05-05T10:00:00", ("changed",), {"site": "Z"},
                      {"xray": Embedding(old.vectors["xray"].vector, VERSION)}))
    hit = store.search("xray", q, k=1).hits[0]
    assert (hit.case_id, hit.patient_id, hit.labels, hit.metadata, hit.study_time) == \
        ("c4", "p-new", ("changed",), {"site": "Z"}, "2021-05-05T10:00:00")


def test_delete_invalidates(store):
    q = _query(store, "c9")
    assert store.search("xray", q, k=1).hits[0].case_id == "c9"
    store.delete("c9")
    assert "c9" not in [h.case_id for h in store.search("xray", q, k=60).hits]
    # re-created under the same id with the same vector: a new vec_id, the new payload
    store.upsert(Case("c9", "p-back", None, ("back",), {}, {"xray": Embedding(q, VERSION)}))
    hit = store.search("xray", q, k=1).hits[0]
    assert (hit.case_id, hit.patient_id, hit.labels, hit.metadata, hit.study_time) == ("c9", "p-back", ("back",), {}, None)


def test_update_vectors_and_failed_writes_invalidate(store):
    store.search("xray", _query(store, "c1"), k=10)
    generation = store._hits.generation
    new = unit_vectors(1, seed=99)[0]
    store.update_vectors("c1", {"xray": Embedding(new, VERSION)})
    assert store._hits.generation > generation and len(store._hits) == 0
    assert store.search("xray", new, k=1).hits[0].case_id == "c1"
    with pytest.raises(Exception):
        store.delete(["c2", "no-such-case"])  # rejected: nothing deleted, the cache is only dropped
    assert store.search("xray", _query(store, "c2"), k=1).hits[0].case_id == "c2"


def test_hits_do_not_share_the_cached_metadata(store):
    q = _query(store, "c5")
    first = store.search("xray", q, k=1).hits[0]
    first.metadata["site"] = "mutated by a caller"
    assert store.search("xray", q, k=1).hits[0].metadata == {"site": "ABC"[5 % 3]}


def test_a_read_racing_a_write_does_not_cache_the_old_row(store):
    """A lookup that began before a write committed must not store what it read afterwards."""
    cache: HitCache = store._hits
    conn = store._reader()
    vec_ids = list(hit_rows(conn, [1, 2, 3]))
    generation_seen = threading.Event()
    original = cache.lookup

    class SlowConn:  # the write commits while this lookup is between its generation read and SQLite
        def execute(self, *args):
            store.upsert(Case("c0", "p-race", None, ("race",), {}, {"xray": Embedding(_query(store, "c0"), VERSION)}))
            generation_seen.set()
            return conn.execute(*args)

    cache.invalidate()
    original(SlowConn(), vec_ids)
    assert generation_seen.is_set()
    assert len(cache) == 0  # nothing stored: the generation moved on during the lookup
    hit = store.search("xray", _query(store, "c0"), k=1).hits[0]
    assert hit.labels == ("race",)


def test_capacity_bounds_the_cache(tmp_path):
    with CaseStore(tmp_path / "lib", dim=DIM, model_version=VERSION, hit_cache_size=15) as s:
        s.upsert_many(make_cases(unit_vectors(60, seed=3)))
        for q in unit_vectors(10, seed=8):
            s.search("xray", q, k=10)
            assert len(s._hits) <= 15


def test_hit_rows_use_the_covering_index_and_a_store_without_it_gains_it(tmp_path):
    """Hits are hydrated through `vectors_case_of` (vec_id -> case_pk, not the blob pages); a store
    written before that index existed gets it when opened, and its searches read the same hits."""
    import sqlite3

    from index.case_rows import HIT_ROWS_SQL
    from index.filters import admitted_rows_sql

    vectors = unit_vectors(40, seed=8)
    with CaseStore(tmp_path / "lib", dim=DIM, model_version=VERSION, hit_cache_size=0) as s:
        s.upsert_many(make_cases(vectors))
        before = [s.search("xray", q, k=8) for q in vectors[:5]]
    conn = sqlite3.connect(tmp_path / "lib" / "cases.sqlite3")
    plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + HIT_ROWS_SQL, ("[1]",)))
    assert "COVERING INDEX vectors_case_of" in plan
    sql, params = admitted_rows_sql(SearchFilter(labels_any=("rare",)))
    assert "COVERING INDEX vectors_case_of" in " ".join(
        str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, ["[1]", *params]))
    conn.execute("DROP INDEX vectors_case_of")  # as a store from before the index
    conn.commit()
    conn.close()
    with CaseStore(tmp_path / "lib", dim=DIM, model_version=VERSION, hit_cache_size=0) as s:
        assert [s.search("xray", q, k=8) for q in vectors[:5]] == before
        names = {row[0] for row in s._writer.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "vectors_case_of" in names
