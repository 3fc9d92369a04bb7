"""Reading precomputed vectors (.npy, .npz, Parquet, shard folders) for `tribind ingest vectors:...`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encoders.errors import InvalidInputError
from tribind.vector_sources import (batch_to_cases, batch_to_store_cases, ingest_vector_source, iter_vector_batches,
                                    open_vector_source)

DIM = 8


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_npy_with_id_sidecar_in_bounded_batches(tmp_path):
    vectors = unit(10)
    path = tmp_path / "emb.npy"
    np.save(path, vectors)
    (tmp_path / "emb.npy.ids.txt").write_text("\n".join(f"case-{i}" for i in range(10)))
    source = open_vector_source(f"vectors:{path}?modality=ecg&model_version=m1")
    assert (source.total, source.dim, source.modalities, source.model_version) == (10, DIM, ("ecg",), "m1")
    batches = list(source.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert batches[2].case_ids == ["case-8", "case-9"] and batches[2].patient_ids == ["case-8", "case-9"]
    assert np.array_equal(np.concatenate([b.vectors["ecg"] for b in batches]), vectors)


def test_npy_without_ids_numbers_rows_and_needs_a_modality(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, unit(3))
    first = next(iter_vector_batches(f"vectors:{path}?modality=xray&id_prefix=nih-", 2))
    assert first.case_ids == ["nih-0", "nih-1"]
    with pytest.raises(InvalidInputError, match=r"modality=xray\|ecg\|text"):
        open_vector_source(f"vectors:{path}")
    with pytest.raises(InvalidInputError, match="unknown option"):
        open_vector_source(f"vectors:{path}?modalty=xray")


def test_rows_that_are_not_unit_vectors_are_named(tmp_path):
    vectors = unit(6)
    vectors[4] *= 3.0
    path = tmp_path / "bad.npy"
    np.save(path, vectors)
    with pytest.raises(InvalidInputError) as err:
        list(iter_vector_batches(f"vectors:{path}?modality=xray", 4))
    assert err.value.field == "bad.npy[4]" and "L2 norm 3" in err.value.reason and "normalised" in err.value.reason
    vectors[4] = np.nan
    np.save(path, vectors)
    with pytest.raises(InvalidInputError, match="NaN"):
        list(iter_vector_batches(f"vectors:{path}?modality=xray", 4))


def test_npz_with_masks_metadata_and_model_version(tmp_path):
    path = tmp_path / "cases.npz"
    xray = unit(3, 1)
    xray[1] = 0.0  # masked out: not checked, not ingested
    np.savez(path, ids=np.array(["a", "b", "c"]), patient_ids=np.array(["p1", "p1", "p2"]),
             study_times=np.array(["2180-01-01T00:00:00", "", ""]), labels=np.array(["lvh;normal", "", "lvh"]),
             metadata=np.array([json.dumps({"site": "A"}), "", "{}"]), xray=xray,
             xray_mask=np.array([True, False, True]), text=unit(3, 2), model_version=np.array("m9"))
    source = open_vector_source(path)
    assert source.modalities == ("xray", "text") and source.model_version == "m9"
    batch = next(source.batches(10))
    assert batch.labels == [("lvh", "normal"), (), ("lvh",)] and batch.metadata[0] == {"site": "A"}
    assert batch.study_times == ["2180-01-01T00:00:00", None, None]
    cases = batch_to_store_cases(batch, "m9")
    assert set(cases[1].vectors) == {"text"} and set(cases[0].vectors) == {"xray", "text"}
    messages = batch_to_cases(batch, "m9")
    assert [len(m.vectors) for m in messages] == [2, 1, 2]
    assert messages[0].vectors[0].model_version == "m9" and messages[0].patient_id == "p1"
    assert np.allclose(list(messages[2].vectors[0].values), xray[2])


def test_parquet_row_groups_with_missing_vectors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    vectors = unit(5, 3)
    column = pa.array([vectors[i].tolist() if i != 2 else None for i in range(5)], type=pa.list_(pa.float32()))
    table = pa.table({"case_id": [f"k{i}" for i in range(5)], "patient_id": ["p"] * 5,
                      "labels": [["cardiomegaly"], [], None, ["lvh", "normal"], []], "xray": column})
    table = table.replace_schema_metadata({"model_version": "m3"})
    path = tmp_path / "v.parquet"
    pq.write_table(table, path, row_group_size=2)
    source = open_vector_source(f"vectors:{path}")
    assert (source.total, source.dim, source.model_version) == (5, DIM, "m3")
    batches = list(source.batches(3))
    present = np.concatenate([b.present["xray"] for b in batches])
    assert present.tolist() == [True, True, False, True, True]
    rows = np.concatenate([b.vectors["xray"] for b in batches])
    assert np.allclose(rows[present], vectors[present])
    assert [lab for b in batches for lab in b.labels] == [("cardiomegaly",), (), (), ("lvh", "normal"), ()]


def test_ingest_needs_the_model_version_and_sends_every_case(tmp_path):
    path = tmp_path / "e.npy"
    np.save(path, unit(7))

    class Client:
        def __init__(self):
            self.sent = []

        def upsert(self, cases):
            self.sent.append([c.case_id for c in cases])

    with pytest.raises(InvalidInputError, match="model_version"):
        ingest_vector_source(Client(), open_vector_source(f"vectors:{path}?modality=text"), 3)
    client = Client()
    written = ingest_vector_source(client, open_vector_source(f"vectors:{path}?modality=text&model_version=m"), 3)
    assert written == 7 and sorted(sum(client.sent, [])) == sorted(f"e-{i}" for i in range(7))
