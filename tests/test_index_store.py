"""Case store API: round trip, validation before mutation, filters, paging, versions."""

from __future__ import annotations

import sqlite3

import faiss
import numpy as np
import pytest

from index import (CaseNotFound, CaseStore, Embedding, IndexPolicy, InvalidRequest, RawInput,
                   SearchFilter, VersionMismatch)
from index_helpers import DIM, VERSION, make_cases, unit_vectors


@pytest.fixture()
def store(tmp_path):
    with CaseStore(tmp_path / "store", dim=DIM, model_version=VERSION) as s:
        yield s


def brute_force(vectors: np.ndarray, query: np.ndarray, keep) -> list[str]:
    scores = vectors @ query
    return [f"c{i}" for i in np.argsort(-scores, kind="stable") if keep(i)]


def test_round_trip_upsert_get_search_delete(store):
    vectors = unit_vectors(60)
    cases = make_cases(vectors)
    cases[3].raw = {"xray": RawInput(b"\x89PNG...", "image/png")}
    assert store.upsert_many(cases) == 60
    got = store.get("c3", include_raw=True)
    assert got.patient_id == "p3" and got.labels == ("odd",) and got.metadata == {"site": "A"}
    np.testing.assert_array_equal(got.vectors["xray"].vector, vectors[3])
    assert got.vectors["xray"].model_version == VERSION and got.raw["xray"].data == b"\x89PNG..."
    result = store.search("xray", vectors[10], k=5)
    assert result.hits[0].case_id == "c10" and result.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.case_id for h in result.hits] == brute_force(vectors, vectors[10], lambda i: True)[:5]
    assert store.delete("c10") == 1
    assert "c10" not in [h.case_id for h in store.search("xray", vectors[10], k=60).hits]
    with pytest.raises(CaseNotFound):
        store.get("c10")
    with pytest.raises(CaseNotFound):
        store.delete(["c11", "nope"])
    assert store.get("c11").case_id == "c11"  # the failed delete removed nothing
    stats = store.stats()
    assert stats.cases == 59 and stats.modalities["xray"].vectors == 59 and stats.modalities["xray"].index_kind == "flat"


def test_upsert_is_idempotent_and_replaces_vectors(store):
    vectors = unit_vectors(20)
    store.upsert_many(make_cases(vectors))
    store.upsert_many(make_cases(vectors))
    assert store.stats().modalities["xray"].indexed == 20
    replacement = make_cases(vectors[:1], modality="ecg")[0]  # c0 now has only an ECG vector
    store.upsert(replacement)
    assert set(store.get("c0").vectors) == {"ecg"}
    assert "c0" not in [h.case_id for h in store.search("xray", vectors[0], k=20).hits]
    assert store.search("ecg", vectors[0], k=1).hits[0].case_id == "c0"


def _dump(store: CaseStore, db_path) -> tuple[list[str], dict[str, bytes]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = list(conn.iterdump())
    finally:
        conn.close()
    return rows, {m: faiss.serialize_index(ix.index).tobytes() for m, ix in store._indexes.items()}


@pytest.mark.parametrize("mutate, field", [
    (lambda c: setattr(c[3], "vectors", {"ecg": Embedding(np.ones(DIM, np.float32), VERSION)}), "cases[3].vectors.ecg"),
    (lambda c: setattr(c[2], "vectors", {"xray": Embedding(np.full(DIM, np.nan, np.float32), VERSION)}), "cases[2].vectors.xray"),
    (lambda c: setattr(c[1], "vectors", {"xray": Embedding(np.ones(DIM + 1, np.float32) / np.sqrt(DIM + 1), VERSION)}), "cases[1].vectors.xray"),
    (lambda c: setattr(c[4], "vectors", {"mri": c[4].vectors["xray"]}), "cases[4].vectors.mri"),
    (lambda c: setattr(c[0], "case_id", ""), "cases[0].case_id"),
    (lambda c: setattr(c[5], "case_id", "c1"), "cases[5].case_id"),
    (lambda c: setattr(c[6], "study_time", "yesterday"), "cases[6].study_time"),
    (lambda c: setattr(c[6], "metadata", {"site": 3}), "cases[6].metadata.site"),
])
def test_rejected_batch_changes_nothing(tmp_path, mutate, field):
    # IVF with a tiny threshold so the dump covers a trained index too
    policy = IndexPolicy(flat_max_vectors=100, nprobe=4)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(unit_vectors(300)))
        store.upsert_many(make_cases(unit_vectors(10, seed=3), modality="ecg"))
        assert store._indexes["xray"].kind == "ivf"
        before = _dump(store, store._db_path)
        batch = make_cases(unit_vectors(10, seed=9), start=0)  # overwrites c0..c9: would change every index
        mutate(batch)
        with pytest.raises(InvalidRequest) as err:
            store.upsert_many(batch)
        assert err.value.field == field
        assert _dump(store, store._db_path) == before


def test_failure_inside_the_transaction_rolls_back(store, monkeypatch):
    store.upsert_many(make_cases(unit_vectors(30)))
    before = _dump(store, store._db_path)
    import index.case_rows as case_rows

    def explode(conn, rows):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(case_rows, "_insert_vectors", explode)
    with pytest.raises(sqlite3.OperationalError):
        store.upsert_many(make_cases(unit_vectors(5, seed=4), start=25))
    assert _dump(store, store._db_path) == before


def test_version_mismatch_on_upsert_and_on_search(tmp_path):
    vectors = unit_vectors(10)
    with CaseStore(tmp_path / "s", dim=DIM, model_version="old") as old:
        cases = make_cases(vectors, version="old")
        cases[0].raw = {"xray": RawInput(b"png", "image/png")}
        old.upsert_many(cases)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION) as store:
        with pytest.raises(VersionMismatch, match="tribind reindex"):
            store.search("xray", vectors[0], k=3)
        with pytest.raises(VersionMismatch):
            store.upsert_many(make_cases(vectors[:1], version="old"))
        stale = list(store.iter_stale())
        assert len(stale) == 10 and stale[0].raw.data == b"png" and stale[1].raw is None
        for item in stale:
            store.update_vectors(item.case_id, {item.modality: Embedding(vectors[int(item.case_id[1:])], VERSION)})
        assert not list(store.iter_stale())
        assert store.search("xray", vectors[0], k=1).hits[0].case_id == "c0"
        assert store.get("c0").labels == ("even", "rare")  # reindex keeps the rest of the case


@pytest.mark.parametrize("search_filter, keep", [
    (SearchFilter(labels_any=("rare", "odd")), lambda i: i % 2 == 1 or i % 50 == 0),
    (SearchFilter(labels_all=("even", "rare")), lambda i: i % 50 == 0),
    (SearchFilter(labels_none=("odd",)), lambda i: i % 2 == 0),
    (SearchFilter(patient_in=("p1", "p2")), lambda i: i % 7 in (1, 2)),
    (SearchFilter(patient_not_in=("p1", "p2")), lambda i: i % 7 not in (1, 2)),
    (SearchFilter(metadata_equals={"site": "B"}), lambda i: i % 3 == 1),
    (SearchFilter(time_from="2020-01-05T00:00:00", time_to="2020-01-10T00:00:00"), lambda i: 4 <= i % 28 < 9),
    (SearchFilter(exclude_case_ids=("c1", "c2", "c3")), lambda i: i not in (1, 2, 3)),
    (SearchFilter(labels_any=("odd",), metadata_equals={"site": "A"}, patient_not_in=("p0",)),
     lambda i: i % 2 == 1 and i % 3 == 0 and i % 7 != 0),
])
@pytest.mark.parametrize("exact_max, postfilter, plan", [
    (4096, 0, "exact-subset"), (0, 0, "flat+selector"), (0, 2048, "flat+postfilter")])
def test_filters_are_exact(tmp_path, search_filter, keep, exact_max, postfilter, plan):
    vectors = unit_vectors(400, seed=1)
    policy = IndexPolicy(exact_max_selected=exact_max, postfilter_max_candidates=postfilter)
    with CaseStore(tmp_path / "s", dim=DIM, model_version=VERSION, policy=policy) as store:
        store.upsert_many(make_cases(vectors))
        query = unit_vectors(1, seed=2)[0]
        result = store.search("xray", query, k=15, filter=search_filter)
        assert [h.case_id for h in result.hits] == brute_force(vectors, query, keep)[:15]
        assert result.plan == plan


def test_offset_threshold_and_group_by_patient(store):
    vectors = unit_vectors(200, seed=5)
    store.upsert_many(make_cases(vectors))
    query = unit_vectors(1, seed=6)[0]
    full = brute_force(vectors, query, lambda i: True)
    page = store.search("xray", query, k=10, offset=20)
    assert [h.case_id for h in page.hits] == full[20:30]
    scores = np.sort(vectors @ query)[::-1]
    threshold = float(scores[12] - 1e-6)
    cut = store.search("xray", query, k=50, score_threshold=threshold)
    assert len(cut.hits) == 13 and all(h.score >= threshold for h in cut.hits)
    grouped = store.search("xray", query, k=5, group_by_patient=True)
    patients = [h.patient_id for h in grouped.hits]
    assert len(grouped.hits) == 5 and len(set(patients)) == 5
    best_per_patient, seen = [], set()
    for case_id in full:
        p = f"p{int(case_id[1:]) % 7}"
        if p not in seen:
            seen.add(p)
            best_per_patient.append(case_id)
    assert [h.case_id for h in grouped.hits] == best_per_patient[:5]
    assert len(store.search("xray", query, k=10, group_by_patient=True).hits) == 7  # only 7 patients qualify


def test_bad_search_requests_name_the_field(store):
    store.upsert_many(make_cases(unit_vectors(5)))
    query = unit_vectors(1)[0]
    for kwargs, field in [
        (dict(modality="mri", vector=query), "modality"),
        (dict(modality="xray", vector=query * 2), "vector"),
        (dict(modality="xray", vector=query, k=0), "k"),
        (dict(modality="xray", vector=query, offset=-1), "offset"),
        (dict(modality="xray", vector=query, filter=SearchFilter(time_from="nope")), "filter.time_from"),
    ]:
        with pytest.raises(InvalidRequest) as err:
            store.search(**kwargs)
        assert err.value.field == field
