"""Explanations on the `test` preset: shapes, no NaN, determinism, pairwise, and no effect on scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import create_model
from encoders.attention import attention_modules
from encoders.errors import InvalidInputError
from encoders.explain import (
    case_evidence, ecg_item, embed_items, embedding_target, explain, explain_batch, explain_pair, label_target,
    text_item, text_target, xray_item,
)
from training.phantom import generate_case

REPORT = "Blunted left costophrenic angle, consistent with a small effusion.\nECG: atrial fibrillation."


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("test")


@pytest.fixture(scope="module")
def case():
    return generate_case(777, 1, xray_size=64, missing_rate=0.0)


@pytest.fixture(scope="module")
def items(bundle, case):
    return {"xray": xray_item(bundle, case.xray, "x"),
            "ecg": ecg_item(bundle, case.ecg, float(case.ecg_fs), list(case.lead_names), "e"),
            "text": text_item(REPORT, "r")}


@pytest.mark.parametrize("method", ["chefer", "rollout"])
def test_shapes_and_finite(bundle, items, method):
    cfg = bundle.config
    target = label_target(bundle, "pleural effusion")
    grid = cfg["xray"]["image_size"] // cfg["xray"]["patch_size"]
    windows = int(cfg["ecg"]["sample_rate"] * cfg["ecg"]["seconds"]) // cfg["ecg"]["patch_samples"]
    x = explain(bundle, items["xray"], target, method)
    assert x.relevance.shape == (grid, grid) and x.heatmap.shape == (cfg["xray"]["image_size"],) * 2
    e = explain(bundle, items["ecg"], target, method)
    assert e.relevance.shape == (12, windows) and e.heatmap.shape == (windows,)
    assert e.window_s == pytest.approx(cfg["ecg"]["patch_samples"] / cfg["ecg"]["sample_rate"])
    t = explain(bundle, items["text"], target, method)
    assert len(t.words) == len(t.spans) == t.relevance.shape[0] > 5
    assert [REPORT[a:b] for a, b in t.spans] == t.words and "costophrenic" in t.words  # sub-words merged
    for explanation in (x, e, t):
        assert np.isfinite(explanation.relevance).all() and (explanation.relevance >= 0).all()
        assert explanation.relevance.max() > 0
        assert explanation.method == method and explanation.target == target.description


def test_deterministic(bundle, items):
    target = label_target(bundle, "atrial_fibrillation")
    for item in items.values():
        first, second = explain(bundle, item, target), explain(bundle, item, target)
        np.testing.assert_array_equal(first.relevance, second.relevance)
        assert first.score == second.score


def test_explaining_leaves_scores_and_model_unchanged(bundle, items):
    target = text_target(bundle, "small left pleural effusion")
    before = {m: embed_items(bundle, [it]) for m, it in items.items()}
    implementation = bundle.model.text.base.config._attn_implementation
    for item in items.values():
        explanation = explain(bundle, item, target)
        # The explained score is the score the ordinary path returns.
        assert explanation.score == pytest.approx(float(before[item.modality][0] @ target.embedding), abs=1e-5)
    for modality, item in items.items():
        torch.testing.assert_close(embed_items(bundle, [item]), before[modality], atol=0, rtol=0)
    assert not bundle.model.training
    assert all(module.captured is None for module in attention_modules(bundle.model))
    assert bundle.model.text.base.config._attn_implementation == implementation
    assert all(p.grad is None for p in bundle.model.parameters())  # no gradient left on the weights


def test_twin_shares_every_weight_and_follows_in_place_updates(bundle, items):
    from encoders.explain.engine import explaining_model

    twin = explaining_model(bundle.model)
    assert twin is explaining_model(bundle.model) and twin is not bundle.model
    ours = dict(bundle.model.named_parameters())
    assert all(p.data_ptr() == ours[name].data_ptr() for name, p in twin.named_parameters())
    target = label_target(bundle, "cardiomegaly")
    before = explain(bundle, items["xray"], target).score
    with torch.no_grad():
        bundle.model.xray_proj.weight.mul_(-1.0)
    try:
        assert explain(bundle, items["xray"], target).score == pytest.approx(-before, abs=1e-5)
    finally:
        with torch.no_grad():
            bundle.model.xray_proj.weight.mul_(-1.0)


def test_chefer_depends_on_the_target_rollout_does_not(bundle, items):
    a, b = label_target(bundle, "cardiomegaly"), text_target(bundle, "normal sinus rhythm, no acute process")
    for modality in ("xray", "ecg"):
        item = items[modality]
        assert not np.allclose(explain(bundle, item, a).relevance, explain(bundle, item, b).relevance)
        np.testing.assert_allclose(explain(bundle, item, a, "rollout").relevance,
                                   explain(bundle, item, b, "rollout").relevance, rtol=1e-5, atol=1e-7)


def test_batch_equals_single(bundle, case, items):
    other = xray_item(bundle, generate_case(777, 2, xray_size=64, missing_rate=0.0).xray)
    targets = torch.stack([label_target(bundle, "cardiomegaly").embedding, text_target(bundle, "edema").embedding])
    batch = explain_batch(bundle, [items["xray"], other], targets)
    single = explain_batch(bundle, [other], targets[1])[0]
    np.testing.assert_allclose(batch[1].relevance, single.relevance, rtol=1e-4, atol=1e-7)


def test_ecg_leads_split_time_and_absent_lead_gets_nothing(bundle, case):
    names = list(case.lead_names)
    keep = [i for i, name in enumerate(names) if name != "V3"]
    item = ecg_item(bundle, case.ecg[keep], float(case.ecg_fs), [names[i] for i in keep])
    e = explain(bundle, item, label_target(bundle, "lbbb"))
    assert e.relevance[e.lead_names.index("V3")].sum() == 0.0
    np.testing.assert_allclose(e.relevance.sum(axis=0), e.heatmap, rtol=1e-5)


def test_pairwise_explains_the_same_score_on_both_sides(bundle, items):
    pair = explain_pair(bundle, items["xray"], items["text"])
    expected = float(embed_items(bundle, [items["xray"]])[0] @ embed_items(bundle, [items["text"]])[0])
    assert pair.score == pytest.approx(expected, abs=1e-6)
    assert pair.a.score == pytest.approx(expected, abs=1e-5) and pair.b.score == pytest.approx(expected, abs=1e-5)
    assert pair.a.modality == "xray" and pair.b.modality == "text"


def test_case_evidence_orders_by_score_and_keeps_k(bundle, items, case):
    target = embedding_target(embed_items(bundle, [items["ecg"]])[0], "query ECG")
    cases = [("same", items["ecg"]), ("film", items["xray"]), ("report", items["text"])]
    found = case_evidence(bundle, target, cases, k=2)
    assert len(found) == 2 and found[0].case_id == "same" and found[0].score == pytest.approx(1.0, abs=1e-5)
    assert found[0].score >= found[1].score and found[0].explanation.relevance.shape[0] == 12


def test_bad_inputs_say_what_to_do(bundle, items):
    with pytest.raises(InvalidInputError, match="one of"):
        explain(bundle, items["xray"], label_target(bundle, "cardiomegaly"), method="gradcam")
    with pytest.raises(InvalidInputError, match="unit-norm"):
        embedding_target(np.ones(bundle.model.embed_dim))
    with pytest.raises(InvalidInputError, match="one modality"):
        explain_batch(bundle, [items["xray"], items["ecg"]], label_target(bundle, "lvh").embedding)
    with pytest.raises(InvalidInputError, match="empty"):
        text_item("   ")


@pytest.fixture(scope="module", params=["mean_query", "cls"])
def row_pooled_bundle(request):
    from encoders.config import resolve_config

    config = resolve_config("test")
    config["text"]["pooling"] = request.param
    torch.manual_seed(0)
    return create_model(config)


@pytest.mark.parametrize("method", ["chefer", "rollout"])
def test_row_pooled_text_explanation_is_finite_deterministic_and_scores_the_cosine(row_pooled_bundle, method):
    """Text towers pooled from one row (mean_query, cls) read relevance from that row, not a mean."""
    bundle = row_pooled_bundle
    item = text_item(REPORT, "r")
    target = text_target(bundle, "pleural effusion")
    first = explain(bundle, item, target, method)
    again = explain(bundle, item, target, method)
    assert first.relevance.shape == (len(first.words),)
    assert np.isfinite(first.relevance).all() and (first.relevance >= 0).all() and first.relevance.sum() > 0
    np.testing.assert_array_equal(first.relevance, again.relevance)
    cosine = float(embed_items(bundle, [item])[0] @ target.embedding)
    assert first.score == pytest.approx(cosine, abs=1e-5)
