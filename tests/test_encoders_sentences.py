"""The "sentence_query" text tower: sentences found, tokenised and encoded on their own, reports the
mean of their sentences, so a prompt and the same sentence inside a report are the same term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders import create_model
from encoders.config import resolve_config
from encoders.errors import InvalidInputError
from encoders.explain import explain
from encoders.explain.items import text_item
from encoders.explain.targets import text_target
from encoders.explain.words import word_spans
from encoders.sentences import sentence_spans, split_sentences
from text_helpers import make_adapters_matter, output_and_lora_grads

REPORT = "FINDINGS: Small left pneumothorax.  No effusion.\nIMPRESSION: Heart size 1.5 times normal!\nECG:\nSinus rhythm."
SENTENCES = ["FINDINGS: Small left pneumothorax.", "No effusion.", "IMPRESSION: Heart size 1.5 times normal!",
             "ECG:", "Sinus rhythm."]


def test_sentences_end_at_stops_and_line_breaks_and_index_the_text():
    assert split_sentences(REPORT) == SENTENCES
    for (start, end), sentence in zip(sentence_spans(REPORT), SENTENCES):
        assert REPORT[start:end] == sentence
    assert split_sentences("  one line without a stop  ") == ["one line without a stop"]
    assert split_sentences("Ratio 0.5 mV. Next") == ["Ratio 0.5 mV.", "Next"]
    assert sentence_spans("") == [] and sentence_spans(" \n ") == []


@pytest.fixture(scope="module")
def bundle():
    config = resolve_config("test")
    config["text"]["pooling"] = "sentence_query"
    config["text"]["max_length"] = 64
    config["text"]["lora"].update(target_modules=["query", "key", "value", "dense"], top_layers=1)
    torch.manual_seed(0)
    bundle = create_model(config)
    make_adapters_matter(bundle.model.text)
    return bundle


def test_each_sentence_is_its_own_cls_sep_piece_and_a_prompt_is_a_slice_of_the_report(bundle):
    tokenizer = bundle.tokenizer
    ids = tokenizer.encode_each([REPORT])[0]
    cls, sep = tokenizer._tok.cls_token_id, tokenizer._tok.sep_token_id
    assert ids.count(cls) == len(SENTENCES) and ids.count(sep) == len(SENTENCES)
    prompt = tokenizer.encode_each(["No effusion."])[0]
    assert any(ids[i:i + len(prompt)] == prompt for i in range(len(ids)))
    padded = tokenizer([REPORT, "No effusion."])
    again = tokenizer.pad(tokenizer.encode_each([REPORT, "No effusion."]))
    assert torch.equal(padded["input_ids"], again["input_ids"])
    assert torch.equal(padded["attention_mask"], again["attention_mask"])


def test_truncation_keeps_whole_sentences_and_closes_the_cut_one(bundle):
    tokenizer = bundle.tokenizer
    long_report = " ".join(f"Finding number {k} is described here in some detail." for k in range(20))
    ids = tokenizer.encode_each([long_report])[0]
    cls, sep = tokenizer._tok.cls_token_id, tokenizer._tok.sep_token_id
    assert len(ids) <= tokenizer.max_length
    assert ids[0] == cls and ids[-1] == sep and ids.count(cls) == ids.count(sep)
    spans = tokenizer.token_spans(long_report)
    assert len(spans) == len(ids)
    assert [k for k, s in enumerate(spans) if s is None] == [k for k, t in enumerate(ids) if t in (cls, sep)]


def test_a_report_is_the_mean_of_its_sentences_encoded_alone(bundle):
    text = bundle.model.text.eval()
    with torch.no_grad():
        report, prompt = text(**bundle.tokenizer([REPORT, "No effusion."]))  # padded batch
        alone = torch.cat([text(**bundle.tokenizer([s])) for s in SENTENCES])
    torch.testing.assert_close(report, alone.mean(dim=0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prompt, alone[1], atol=1e-5, rtol=1e-4)
    # Not a bag of tokens: a sentence's words read in their own order and context.
    with torch.no_grad():
        swapped = text(**bundle.tokenizer(["Effusion no."]))[0]
    assert not torch.allclose(swapped, alone[1], atol=1e-3)


def test_cached_and_uncached_sentences_agree_and_lora_trains(bundle):
    text = bundle.model.text
    tokens = bundle.tokenizer([REPORT, "No effusion.", SENTENCES[2]])
    weights = torch.randn(3, text.width, generator=torch.Generator().manual_seed(3))
    text.train()
    try:
        live, live_grads = output_and_lora_grads(text, tokens, weights, cached=False)
        cached, cached_grads = output_and_lora_grads(text, tokens, weights, cached=True)
        keys = list(text._cache)
    finally:
        text.enable_prefix_cache(False)
        text.eval()
    # Sentence-wise prefixes are their own entries: a whole-report tower sharing the cache never reads them.
    assert keys and all(key.startswith(b"skv:") for key in keys)
    torch.testing.assert_close(cached, live, atol=2e-3, rtol=2e-3)
    assert live_grads and all(g.abs().sum() > 0 for g in live_grads.values())
    for name, grad in live_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=5e-3, rtol=5e-3, msg=name)


def _rows_per_pass(text):
    """Wrap `text._split_forward` to record how many sentence rows each pass encodes."""
    seen: list[int] = []
    inner = text._split_forward

    def counting(input_ids, attention_mask, cache_rows=None):
        seen.append(input_ids.shape[0])
        return inner(input_ids, attention_mask, cache_rows)

    text._split_forward = counting
    return seen, inner


REPEATS = "No effusion. Sinus rhythm.\nNo effusion."   # one sentence twice: it weighs twice in the mean


def test_each_distinct_sentence_is_encoded_once_with_the_joint_pass_numbers(bundle):
    """The batch's sentences are deduplicated before the tower runs; outputs and LoRA gradients equal the
    joint [B, L] pass, a repeated sentence keeps its weight in its report's mean, and the prefix cache is
    keyed per sentence (a row excluded from the cache adds only sentences no other row has)."""
    text = bundle.model.text
    texts = [REPORT, REPEATS, "No effusion.", "A one-off sentence."]
    tokens = bundle.tokenizer(texts)
    weights = torch.randn(len(texts), text.width, generator=torch.Generator().manual_seed(4))
    text.eval()  # no dropout: the two passes draw their masks over different shapes
    outputs, grads = [], []
    seen, inner = _rows_per_pass(text)
    try:
        for forward in (inner, text.forward):  # the joint pass, then the deduplicated one
            text.zero_grad()
            out = forward(tokens["input_ids"], tokens["attention_mask"])
            (out * weights).sum().backward()
            outputs.append(out.detach())
            grads.append({n: p.grad.clone() for n, p in text.named_parameters() if p.requires_grad})
        distinct = len(set(SENTENCES) | {"A one-off sentence."})
        assert seen == [distinct]  # the joint pass calls `inner` directly: only the deduplicated one counts
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)
        for name, grad in grads[0].items():
            torch.testing.assert_close(grads[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
        with torch.no_grad():
            no_eff, sinus = text(**bundle.tokenizer(["No effusion.", "Sinus rhythm."]))
        torch.testing.assert_close(outputs[1][1], (2 * no_eff + sinus) / 3, atol=1e-5, rtol=1e-4)

        text.train()
        text.enable_prefix_cache()
        with torch.no_grad():
            text(**tokens, cache_rows=torch.tensor([True, True, True, False]))
        assert len(text._cache) == distinct - 1  # the one-off sentence was in the excluded row only
    finally:
        text._split_forward = inner
        text.enable_prefix_cache(False)
        text.eval()


def test_memoised_sentences_reuse_rows_across_calls_at_inference_only(bundle):
    text = bundle.model.text.eval()
    seen, inner = _rows_per_pass(text)
    try:
        with torch.no_grad():
            plain = text(**bundle.tokenizer([REPORT, REPEATS, "Something new."]))
            seen.clear()
            with text.memoised_sentences():
                first = text(**bundle.tokenizer([REPORT]))
                again = text(**bundle.tokenizer([REPORT, REPEATS, "Something new."]))
                assert seen == [len(SENTENCES), 1]  # the second call encodes "Something new." only
                text.train()
                text(**bundle.tokenizer([REPORT]))  # training never reads the memo
                assert seen[-1] == len(SENTENCES)
                text.eval()
            assert text._sentence_memo is None
        torch.testing.assert_close(first[0], plain[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(again, plain, atol=1e-5, rtol=1e-4)
    finally:
        text._split_forward = inner
        text.eval()


def test_attention_stays_within_each_sentence(bundle):
    model = bundle.model.eval()
    tokens = bundle.tokenizer([REPORT, "No effusion."])
    with torch.no_grad():
        plain = model.encode_text(**tokens)
    with model.capture_attention() as captured:
        z = model.encode_text(**tokens)
    torch.testing.assert_close(z, plain, atol=1e-5, rtol=1e-4)
    *below, top = captured["text"]
    segment, _, _ = model.text._sentences(tokens["input_ids"], tokens["attention_mask"])
    same = segment[:, :, None].eq(segment[:, None, :]) & segment[:, None, :].ge(0)
    for attention in below:  # [B, H, L, L]: real query rows read only their own sentence
        real_rows = segment.ge(0)[:, None, :, None].expand_as(attention)
        outside = (~same)[:, None].expand_as(attention) & real_rows
        assert float(attention[outside].abs().max()) < 1e-6
    assert tuple(top.shape[:3]) == (2, bundle.config["text"]["hf_config"]["num_attention_heads"], len(SENTENCES))
    rows = model.text.pooling_weights(tokens["input_ids"], tokens["attention_mask"]).gt(0)   # [B, Q, L]
    assert rows.sum().item() == tokens["attention_mask"].sum().item()  # every real token in one sentence
    assert float(top[~rows[:, None].expand_as(top) & rows.any(-1)[:, None, :, None].expand_as(top)].abs().max()) == 0.0


def test_text_explanations_cover_the_words_of_every_sentence(bundle):
    segmentation = word_spans(bundle, REPORT)
    assert segmentation.words[:2] == ["FINDINGS", ":"] and "rhythm" in segmentation.words
    for word, (start, end) in zip(segmentation.words, segmentation.spans):
        assert REPORT[start:end] == word
    target = text_target(bundle, "Sinus rhythm.")
    for method in ("chefer", "rollout"):
        explanation = explain(bundle, text_item(REPORT), target, method=method)
        assert explanation.relevance.shape == (len(segmentation.words),)
        assert np.isfinite(explanation.relevance).all() and (explanation.relevance >= 0).all()
        assert explanation.relevance.sum() > 0


def test_sentence_pooling_needs_a_bert_family_tower():
    config = resolve_config("test")
    config["text"]["pooling"] = "sentence_query"
    config["text"]["hf_config"] = {"model_type": "gpt2", "vocab_size": 30522, "n_embd": 32, "n_layer": 2,
                                   "n_head": 2, "n_positions": 64}
    config["text"]["lora"].update(target_modules=["c_attn"], top_layers=None)
    with pytest.raises(InvalidInputError, match="config.text.pooling"):
        create_model(config)


def test_onnx_export_keeps_the_sentence_count_dynamic(bundle, tmp_path):
    """The export traces one-sentence texts and checks a four-sentence one: a sentence count baked
    into the graph would drop sentences there."""
    from encoders import save_checkpoint
    from encoders.backbone import export_onnx

    save_checkpoint(bundle, tmp_path / "ckpt")
    result = export_onnx(tmp_path / "ckpt", "text", tmp_path / "text.onnx")
    assert result["ok"] and result["max_abs_diff"] <= 1e-4
