"""Prepared phantom cases cached on disk between runs (training/case_cache.py): a request reads the first
n of a cached set or draws only the missing tail, and what it returns is what drawing all n would give."""

from __future__ import annotations

import pytest
import torch

import training.phantom_dataset as phantom_dataset
from encoders import create_model
from encoders.config import resolve_config
from training.case_cache import cache_key, cached_phantom_case_tensors
from training.case_tensors import CaseTensors


@pytest.fixture(scope="module")
def bundle():
    return create_model("test")


def _same(a: CaseTensors, b: CaseTensors) -> None:
    for field, value in vars(a).items():
        other = getattr(b, field)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), field
        else:
            assert value == other, field


def test_a_request_reads_the_cache_or_draws_only_the_missing_tail(bundle, tmp_path, monkeypatch):
    drawn: list[tuple[int, int]] = []
    draw = phantom_dataset.phantom_case_tensors

    def counting(bundle, n, seed, **kwargs):
        drawn.append((kwargs.get("start", 0), n))
        return draw(bundle, n, seed, **kwargs)

    monkeypatch.setattr(phantom_dataset, "phantom_case_tensors", counting)
    first = cached_phantom_case_tensors(bundle, 12, 3, 0.15, tmp_path, workers=1)
    assert drawn == [(0, 12)] and [p.name for p in tmp_path.iterdir()] == [f"phantom-{cache_key(bundle, 3, 0.15)}-12.pt"]
    head = cached_phantom_case_tensors(bundle, 8, 3, 0.15, tmp_path, workers=1)
    assert drawn == [(0, 12)] and len(head) == 8
    longer = cached_phantom_case_tensors(bundle, 20, 3, 0.15, tmp_path, workers=1)
    assert drawn == [(0, 12), (12, 8)]
    assert [p.name for p in tmp_path.iterdir()] == [f"phantom-{cache_key(bundle, 3, 0.15)}-20.pt"]

    direct = draw(bundle, 20, 3, workers=1)
    _same(longer, direct)
    _same(head, draw(bundle, 8, 3, workers=1))
    _same(first, draw(bundle, 12, 3, workers=1))
    assert longer.case_ids[12] == "ph3-000012" and longer.has_xray.dtype == torch.bool


def test_the_key_follows_seed_missing_rate_and_input_geometry(bundle, tmp_path):
    key = cache_key(bundle, 3, 0.15)
    assert key == cache_key(bundle, 3, 0.15)
    assert len({key, cache_key(bundle, 4, 0.15), cache_key(bundle, 3, 0.2)}) == 3
    config = resolve_config("test")
    config["xray"]["image_size"] = int(config["xray"]["image_size"]) * 2
    assert cache_key(create_model(config), 3, 0.15) != key
    cached_phantom_case_tensors(bundle, 4, 3, 0.15, tmp_path, workers=1, write=False)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_train_reads_the_cache_it_wrote(tmp_path):
    from training.train import TrainOptions, load_training_data

    bundle = create_model("test")
    opts = TrainOptions(preset="test", cases=6, seed=2, case_cache=str(tmp_path / "cases"))
    written = load_training_data(bundle, opts)
    assert len(list((tmp_path / "cases").iterdir())) == 1
    _same(load_training_data(bundle, opts), written)
