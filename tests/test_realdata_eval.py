"""Real-data evaluation: probe protocol and AUROC maths on controlled data, then the full report shape
on PTB-XL and NIH (test preset, small limits: the numbers of an untrained tiny model are noise, the
structure and the protocol are what is checked here)."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.probe import auroc_table, linear_probe_scores, probe_groups


def test_probe_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 16))
    targets = np.stack([(features[:, 0] + 0.3 * rng.normal(size=400) > 0.5),
                        rng.random(400) < 0.3], axis=1).astype(np.int8)
    _, groups = probe_groups([None] * 400, [None] * 400, [f"p{i}" for i in range(400)])
    scores = linear_probe_scores(features, targets, groups)
    table = auroc_table(targets, scores, ["signal", "noise"])
    assert table["per_label"]["signal"] > 0.95
    assert 0.35 < table["per_label"]["noise"] < 0.65
    assert table["n_positive"]["signal"] == int(targets[:, 0].sum())


def test_probe_protocols():
    protocol, groups = probe_groups(["train", "train", "test"], [None] * 3, ["a", "b", "c"])
    assert protocol == "train split -> test split" and groups.tolist() == [-1, -1, 0]
    protocol, groups = probe_groups(["train"] * 8, [str(f) for f in range(1, 9)], ["p"] * 8)
    assert "strat_fold" in protocol and sorted(set(groups.tolist())) == [0, 1, 2, 3]
    table = auroc_table(np.array([[1], [1]]), np.array([[0.2], [0.9]]), ["all_positive"])
    assert table["per_label"]["all_positive"] is None and table["macro_auroc"] is None


@pytest.fixture(scope="module")
def test_bundle():
    from encoders import create_model

    return create_model("test")


def test_ptbxl_eval_report(shared_data, test_bundle):
    from training.data.real_eval import evaluate_real, format_real_eval

    result = evaluate_real(test_bundle, f"ptbxl:{shared_data / 'ptbxl'}?rate=100", "superclass", limit=80)
    assert result["n_records"] == 80 and result["labelset"] == "ptbxl_super"
    for block in (result, result["random_init"]):
        assert set(block["zero_shot"]) == {"ecg", "text"} and set(block["probe"]) == {"ecg"}
        assert list(block["zero_shot"]["ecg"]["per_label"]) == ["NORM", "MI", "STTC", "CD", "HYP"]
        macro = block["probe"]["ecg"]["macro_auroc"]
        assert macro is None or 0.0 <= macro <= 1.0
    assert "strat_fold" in result["probe"]["ecg"]["protocol"]
    assert result["zero_shot"]["ecg"]["n_positive"]["NORM"] > 0
    text = format_real_eval(result)
    assert "probe ecg" in text and "random" in text and "NORM" in text


def test_nih_eval_report(shared_data, test_bundle):
    from training.data.real_eval import evaluate_real

    result = evaluate_real(test_bundle, f"nih:{shared_data / 'nih_chestxray14'}", limit=60)
    assert set(result["zero_shot"]) == {"xray"} and set(result["probe"]) == {"xray"}
    assert "No Finding" in result["zero_shot"]["xray"]["per_label"]
    assert result["random_init"]["probe"]["xray"]["n"] == result["probe"]["xray"]["n"]


def test_ptbxl_subclass_uses_the_data_areas_label_set(shared_data, test_bundle):
    from training.data.real_eval import evaluate_real

    result = evaluate_real(test_bundle, f"ptbxl:{shared_data / 'ptbxl'}?rate=100", "subclass", limit=40,
                           random_init=False)
    assert result["labelset"] == "ptbxl_subclass" and result["random_init"] is None
    assert "LVH" in result["zero_shot"]["ecg"]["per_label"] and "IMI" in result["probe"]["ecg"]["per_label"]
