"""Evaluation metrics (hand-checked cases) and the `tribind eval --json` contract on a test checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import create_model, save_checkpoint
from encoders.labelsets import load_labelset
from training.evaluate import DIRECTIONS, evaluate_phantom, relevant_labels
from training.metrics import auroc, retrieval_metrics

REPO = Path(__file__).resolve().parents[1]


def test_auroc_hand_values():
    assert auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.75  # 3 of 4 pairs ordered
    assert auroc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_retrieval_recall_and_label_precision():
    eye = np.eye(4)
    labels = [frozenset({"a"}), frozenset({"a"}), frozenset({"b"}), frozenset()]
    perfect = retrieval_metrics(eye, eye, labels, labels, precision_k=2)
    assert perfect["r@1"] == 1.0 and perfect["gallery"] == 4
    # Query 0's top 2: itself (a) and one tie-broken other; label queries = 3 (case 3 has none).
    assert perfect["label_queries"] == 3
    # Gallery item i+1 now matches query i best, so no query finds its own case first.
    shifted = retrieval_metrics(eye, np.roll(eye, 1, axis=0), labels, labels, ks=(1, 2), precision_k=1)
    assert shifted["r@1"] == 0.0
    # Top-1 of query 0 is case 1 (shares "a"); of query 1 case 2 ("b"); of query 2 case 3 (none).
    assert shifted["label_p@1"] == pytest.approx(1 / 3)


def test_relevant_labels_per_direction():
    phantom = load_labelset("phantom")
    assert "cardiomegaly" in relevant_labels(phantom, "text", "xray")
    assert "lbbb" not in relevant_labels(phantom, "text", "xray")
    assert {"cardiomegaly", "lbbb"} <= relevant_labels(phantom, "xray", "ecg")  # case-level match
    assert "normal" not in relevant_labels(phantom, "xray", "ecg")


def test_eval_json_contract(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(create_model("test"), tmp_path / "ckpt")
    done = subprocess.run([sys.executable, "-m", "tribind", "eval", "--checkpoint", str(tmp_path / "ckpt"),
                           "--data", "phantom", "--seed", "5", "--cases", "40", "--threads", "1", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert {"zero_shot", "retrieval", "random_init", "model_version", "cases", "seconds"} <= set(result)
    assert result["cases"] == 40
    for figures in (result, result["random_init"]):
        assert set(figures["retrieval"]) == {f"{a}->{b}" for a, b in DIRECTIONS}
        for row in figures["retrieval"].values():
            assert {"r@1", "r@5", "r@10", "label_p@10", "gallery"} <= set(row)
            assert 0 < row["gallery"] <= 40
        for modality in ("xray", "ecg"):
            zs = figures["zero_shot"][modality]
            assert 0.0 <= zs["macro_auroc"] <= 1.0 and zs["per_label"]
            search = figures["prompt_search"][modality]
            assert set(search["per_label"]) == set(zs["per_label"]) and 0 < search["k"] <= 10
            assert all(0.0 <= p <= 1.0 for p in search["per_label"].values()) and 0.0 <= search["macro_p@10"] <= 1.0
            probes = figures["shared_traits"][modality]
            assert set(probes) == {"heart_axis_deg", "ctr", "habitus"}
            assert all(r2 is None or r2 <= 1.0 for r2 in probes.values())


def test_untrained_model_scores_near_chance():
    torch.manual_seed(1)
    result = evaluate_phantom(create_model("test"), cases=120, seed=11, random_init=False)
    assert abs(result["zero_shot"]["xray"]["macro_auroc"] - 0.5) < 0.2
    ecg_to_xray = result["retrieval"]["ecg->xray"]
    assert ecg_to_xray["r@10"] < 4 * ecg_to_xray["chance_r@10"]


def test_prompt_search_counts_the_label_in_each_prompts_top_k(monkeypatch):
    """Films of one finding lie along one axis; a prompt that lands on that axis finds them, one that
    lands on another finding's axis finds none of them."""
    import training.evaluate as evaluate
    from training.case_tensors import CaseTensors

    phantom = load_labelset("phantom")
    xray_labels = [label.id for label in phantom.for_modality("xray", include_both=False)]
    dim, per_label = 16, 12
    cases = [(label, axis) for axis, label in enumerate(xray_labels[:2]) for _ in range(per_label)]
    n = len(cases)
    films = torch.zeros(n, dim)
    for row, (_, axis) in enumerate(cases):
        films[row, axis] = 1.0
        films[row, 8 + row % 8] = 0.1          # a little of something else, so ties do not decide
    films = torch.nn.functional.normalize(films, dim=-1)
    data = CaseTensors(case_ids=[f"c{i}" for i in range(n)], labels=[(label,) for label, _ in cases],
                       pixels=torch.zeros(n, 1, 4, 4), signals=torch.zeros(n, 12, 4),
                       lead_mask=torch.ones(n, 12, dtype=torch.bool), reports=[None] * n,
                       has_xray=torch.ones(n, dtype=torch.bool), has_ecg=torch.zeros(n, dtype=torch.bool),
                       has_text=torch.zeros(n, dtype=torch.bool))
    first, second = (phantom.get(xray_labels[0]), phantom.get(xray_labels[1]))
    # Every prompt of the first label points at its films; every prompt of the second one, wrongly, too.
    towards = {prompt: 0 for prompt in (*first.positive, *second.positive)}
    # Other labels' prompts point at an empty axis: their top 10 holds none of their own (no such films).

    def fake_embed(_bundle, texts):
        out = torch.zeros(len(texts), dim)
        for i, text in enumerate(texts):
            out[i, towards.get(text, 7)] = 1.0
        return out

    monkeypatch.setattr(evaluate, "embed_texts", fake_embed)
    result = evaluate.prompt_search_metrics(None, data, {"xray": films}, phantom)
    assert set(result) == {"xray"} and result["xray"]["k"] == 10 and result["xray"]["gallery"] == n
    per = result["xray"]["per_label"]
    assert per[xray_labels[0]] == 1.0 and per[xray_labels[1]] == 0.0
    assert all(per[label] == 0.0 for label in xray_labels[2:])
    assert result["xray"]["macro_p@10"] == pytest.approx(1.0 / len(xray_labels))
    assert result["xray"]["random_p@10"] == pytest.approx(1.0 / len(xray_labels))   # two labels, half each
