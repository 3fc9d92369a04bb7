"""Sharded embedding through torchrun with 2 CPU processes (gloo), then the shards into a store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    from training.phantom import write_phantom

    out = tmp_path_factory.mktemp("phantom")
    write_phantom(20, 3, out, xray_size=64, workers=1)
    return out


@pytest.fixture(scope="module")
def shards(phantom_dir, tmp_path_factory) -> Path:
    if not TORCHRUN.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    out = tmp_path_factory.mktemp("shards")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "tribind.shard_embed",
           "--checkpoint", "none", "--preset", "test", "--data", f"phantom:{phantom_dir}", "--out", str(out), "--batch", "4"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


def test_two_ranks_split_the_corpus_without_overlap(shards, phantom_dir):
    from training.data.sources import open_source

    expected = [r.case_id for r in open_source(f"phantom:{phantom_dir}", progress=False)]
    parts = [np.load(shards / f"shard-{r:05d}.npz") for r in (0, 1)]
    ids = [list(p["ids"]) for p in parts]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(expected)
    assert ids[0] == expected[0::2] and ids[1] == expected[1::2]  # position modulo world size
    assert {str(p["model_version"]) for p in parts} == {str(parts[0]["model_version"])}
    for part in parts:
        for modality in ("xray", "ecg", "text"):
            mask = part[f"{modality}_mask"]
            norms = np.linalg.norm(part[modality][mask], axis=1)
            assert np.allclose(norms, 1.0, atol=1e-4)
            assert not part[modality][~mask].any()  # a missing modality stays empty, not a fake vector


def test_shard_vectors_match_a_single_process_embedding(shards, phantom_dir):
    from tribind.shard_embed import encode, load_bundle, prepare
    from training.data.sources import open_source

    bundle = load_bundle("none", "test")
    record = next(r for r in open_source(f"phantom:{phantom_dir}", progress=False) if r.xray_path and r.report)
    inputs = prepare(bundle, record)
    part = next(np.load(p) for p in sorted(shards.glob("shard-*.npz")) if record.case_id in list(np.load(p)["ids"]))
    row = list(part["ids"]).index(record.case_id)
    assert str(part["model_version"]) == bundle.model_version
    for modality in ("xray", "text"):
        alone = encode(bundle, modality, [inputs[modality]], "cpu")[0]
        assert np.allclose(part[modality][row], alone, atol=1e-4), modality


def test_shards_are_ingested_into_the_store(shards, tmp_path):
    from index import CaseStore, SearchFilter
    from tribind.vector_sources import batch_to_store_cases, open_vector_source

    source = open_vector_source(f"vectors:{shards}")
    assert source.total == 20 and set(source.modalities) == {"xray", "ecg", "text"}
    with CaseStore(tmp_path / "store", dim=source.dim, model_version=source.model_version) as store:
        for batch in source.batches(8):
            store.upsert_many(batch_to_store_cases(batch, source.model_version))
        stats = store.stats()
        assert stats.cases == 20
        first = next(source.batches(1))
        case = store.get(first.case_ids[0])
        assert case.patient_id == first.patient_ids[0] and case.labels == first.labels[0]
        modality = next(m for m in ("xray", "ecg", "text") if first.present[m][0])
        hit = store.search(modality, first.vectors[modality][0], k=1,
                           filter=SearchFilter(patient_in=(first.patient_ids[0],))).hits[0]
        assert hit.case_id == first.case_ids[0] and hit.score > 0.999
