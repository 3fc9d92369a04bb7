"""The encoders on the `test` preset: shapes, masks, DropKey, attention capture, LoRA, save/load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from encoders import create_model, list_presets, load_model, save_checkpoint
from encoders.attention import attention_modules, linear_drop_ratios
from encoders.config import resolve_config
from encoders.errors import InvalidInputError
from text_helpers import make_adapters_matter, output_and_lora_grads

REPORTS = ["Cardiomegaly. Small left pleural effusion.", "Normal chest radiograph.", "Sinus rhythm, LBBB."]


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("test")


def _inputs(bundle, batch: int = 3):
    cfg = bundle.config
    size = cfg["xray"]["image_size"]
    samples = int(cfg["ecg"]["sample_rate"] * cfg["ecg"]["seconds"])
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(batch, 1, size, size, generator=generator)
    signals = torch.randn(batch, 12, samples, generator=generator)
    lead_mask = torch.ones(batch, 12, dtype=torch.bool)
    return pixels, signals, lead_mask


def test_presets_registered_and_unknown_lists_them():
    assert {"test", "tiny", "base"} <= set(list_presets())
    with pytest.raises(InvalidInputError) as err:
        create_model("nope")
    for name in ("test", "tiny", "base"):
        assert name in str(err.value)


def test_bad_config_values_raise():
    cfg = resolve_config("test")
    cfg["xray"]["patch_size"] = 7
    with pytest.raises(InvalidInputError, match="patch_size"):
        resolve_config(cfg)
    cfg = resolve_config("test")
    cfg["text"]["pooling"] = "max"
    with pytest.raises(InvalidInputError, match="pooling"):
        resolve_config(cfg)
    for share in (1.0, -0.1, "half", True, {"ecg_text": 1.5}):
        cfg = resolve_config("test")
        cfg["loss"]["label_targets"] = share
        with pytest.raises(InvalidInputError, match="label_targets"):
            resolve_config(cfg)
    cfg = resolve_config("test")
    cfg["loss"]["label_targets"] = {"xray_ecg": 0.5}
    with pytest.raises(InvalidInputError, match="X-ray<->ECG matches the same case") as err:
        resolve_config(cfg)
    assert err.value.field == "config.loss.label_targets.xray_ecg"


def test_shapes_and_unit_norm(bundle):
    model = bundle.model.eval()
    pixels, signals, lead_mask = _inputs(bundle)
    tokens = bundle.tokenizer(REPORTS)
    dim = bundle.config["embed_dim"]
    with torch.no_grad():
        outs = [model.encode_xray(pixels), model.encode_ecg(signals, lead_mask), model.encode_text(**tokens)]
    for z in outs:
        assert z.shape == (3, dim)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_wrong_shapes_raise_invalid_input(bundle):
    model = bundle.model.eval()
    pixels, signals, lead_mask = _inputs(bundle)
    with pytest.raises(InvalidInputError, match="preprocess_xray"):
        model.encode_xray(pixels[:, :, :-1])
    with pytest.raises(InvalidInputError, match="preprocess_ecg"):
        model.encode_ecg(signals[:, :11], lead_mask)
    with pytest.raises(InvalidInputError, match="no leads"):
        model.encode_ecg(signals, torch.zeros_like(lead_mask))
    with pytest.raises(InvalidInputError):
        bundle.tokenizer(["fine", "  "])


def test_missing_leads_are_ignored_and_flagged(bundle):
    model = bundle.model.eval()
    _, signals, lead_mask = _inputs(bundle)
    lead_mask[:, 6:] = False  # limb leads only
    altered = signals.clone()
    altered[:, 6:] = 5.0 * torch.randn_like(altered[:, 6:])
    with torch.no_grad():
        base = model.encode_ecg(signals, lead_mask)
        torch.testing.assert_close(model.encode_ecg(altered, lead_mask), base)
        # A lead recorded as flat zeros is not the same as a lead that is absent.
        zeroed = signals.clone()
        zeroed[:, 6:] = 0.0
        full = model.encode_ecg(zeroed, torch.ones_like(lead_mask))
    assert not torch.allclose(full, base, atol=1e-4)


def test_text_pooling_ignores_padding(bundle):
    model = bundle.model.eval()
    with torch.no_grad():
        alone = model.encode_text(**bundle.tokenizer(REPORTS[1:2]))
        padded = model.encode_text(**bundle.tokenizer(REPORTS))[1:2]  # padded to the longest report
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_dropkey_schedule_and_train_only(bundle):
    assert linear_drop_ratios(0.3, 0.0, 4) == pytest.approx([0.3, 0.2, 0.1, 0.0])
    ratios = [m.drop_ratio for m in attention_modules(bundle.model.xray)]
    cfg = bundle.config["xray"]
    assert ratios == pytest.approx(linear_drop_ratios(cfg["dropkey_start"], cfg["dropkey_end"], cfg["layers"]))
    model = bundle.model
    pixels, _, _ = _inputs(bundle)
    model.eval()
    with torch.no_grad():
        first, second = model.encode_xray(pixels), model.encode_xray(pixels)
    torch.testing.assert_close(first, second)
    model.train()
    try:
        torch.manual_seed(3)
        with torch.no_grad():
            noisy = model.encode_xray(pixels)
        assert not torch.allclose(noisy, first, atol=1e-5)
    finally:
        model.eval()


def test_attention_capture_is_exact_and_keeps_graph(bundle):
    model = bundle.model.eval()
    pixels, signals, lead_mask = _inputs(bundle)
    with torch.no_grad():
        plain = model.encode_xray(pixels)
    pixels = pixels.clone().requires_grad_(True)
    with model.capture_attention(keep_graph=True) as captured:
        z = model.encode_xray(pixels)
        model.encode_ecg(signals, lead_mask)
        model.encode_text(**bundle.tokenizer(REPORTS))
    torch.testing.assert_close(z.detach(), plain, atol=1e-5, rtol=1e-4)
    cfg = bundle.config
    n_img = (cfg["xray"]["image_size"] // cfg["xray"]["patch_size"]) ** 2 + 1
    assert [tuple(a.shape) for a in captured["xray"]] == [(3, cfg["xray"]["heads"], n_img, n_img)] * cfg["xray"]["layers"]
    assert len(captured["ecg"]) == cfg["ecg"]["layers"] and captured["ecg"][0].shape[-1] == model.ecg.num_tokens
    assert len(captured["text"]) == cfg["text"]["hf_config"]["num_hidden_layers"]
    torch.testing.assert_close(captured["xray"][0].sum(-1), torch.ones(3, cfg["xray"]["heads"], n_img))
    # Chefer-style relevance needs d(output)/d(attention): the probabilities must be in the graph.
    grads = torch.autograd.grad(z.sum(), captured["xray"], retain_graph=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    for module in attention_modules(model):
        assert module.captured is None  # released after the block


def test_only_lora_and_heads_train(bundle):
    trainable = {n for n, p in bundle.model.named_parameters() if p.requires_grad}
    text_trainable = {n for n in trainable if n.startswith("text.")}
    assert text_trainable and all("lora_" in n for n in text_trainable)
    frozen_text = [n for n, p in bundle.model.text.named_parameters() if not p.requires_grad]
    assert any("word_embeddings" in n for n in frozen_text)
    for head in ("xray_proj.weight", "ecg_proj.weight", "text_proj.weight", "logit_scale"):
        assert head in trainable
    # LoRA sits only on the top `lora.top_layers` layers; the ones below are frozen and cacheable.
    assert all(".layer.1." in n for n in text_trainable)


def test_prefix_cache_gives_same_embeddings(bundle):
    model = copy.deepcopy(bundle.model).eval()
    tokens = bundle.tokenizer(REPORTS)
    with torch.no_grad():
        fresh = model.encode_text(**tokens)
        model.text.enable_prefix_cache()
        model.encode_text(**tokens)
        cached = model.encode_text(**tokens)
        full = model.text.model(**tokens).last_hidden_state  # the unsplit HF forward
    torch.testing.assert_close(cached, fresh, atol=1e-3, rtol=1e-3)  # cache is fp16
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    pooled = (full * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(model.text(**tokens), pooled, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("top_layers", [1, 2])
def test_cls_pooling_runs_top_layer_on_first_row_only_with_same_numbers(top_layers):
    """CLS pooling computes only row 0 of the top layer; it must equal the full HF forward's row 0,
    with and without a frozen prefix, and pass gradients to the top layer's LoRA weights."""
    config = resolve_config("test")
    config["text"]["pooling"] = "cls"
    config["text"]["lora"]["top_layers"] = top_layers
    torch.manual_seed(0)
    model = create_model(config).model.eval()
    make_adapters_matter(model.text)
    tokens = create_model(config).tokenizer(REPORTS)
    fast = model.text(**tokens)
    full = model.text.model(**tokens).last_hidden_state[:, 0]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-4)
    # Not .sum(): a LayerNorm output with unit gain sums to a constant, whose gradient is zero.
    (fast * torch.randn_like(fast)).sum().backward()
    top = [p.grad for n, p in model.text.named_parameters() if p.requires_grad and ".layer.1." in n]
    assert top and all(g is not None and g.abs().sum() > 0 for g in top)


def test_save_load_round_trip_and_version(bundle, tmp_path):
    with torch.no_grad():
        for p in bundle.model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # LoRA B starts at zero: make the adapters matter
    version = save_checkpoint(bundle, tmp_path / "ckpt")
    assert version == bundle.model_version == (tmp_path / "ckpt" / "model_version.txt").read_text().strip()
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.model_version == version
    again = create_model("test", checkpoint=tmp_path / "ckpt")
    assert again.model_version == version
    pixels, signals, lead_mask = _inputs(bundle)
    tokens = bundle.tokenizer(REPORTS)
    with torch.no_grad():
        for name, args in (("encode_xray", (pixels,)), ("encode_ecg", (signals, lead_mask)), ("encode_text", tokens)):
            fn_a, fn_b = getattr(bundle.model.eval(), name), getattr(loaded.model, name)
            a = fn_a(**args) if isinstance(args, dict) else fn_a(*args)
            b = fn_b(**args) if isinstance(args, dict) else fn_b(*args)
            torch.testing.assert_close(a, b, atol=5e-3, rtol=0)  # matrices are stored in fp16
    stored = {n for n in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(tmp_path / "ckpt" / "model.safetensors"))}
    assert not any("word_embeddings" in n or ("text." in n and "lora_" not in n) for n in stored)


def test_checkpoint_of_other_architecture_is_refused(bundle, tmp_path):
    save_checkpoint(bundle, tmp_path / "ckpt")
    with pytest.raises(InvalidInputError, match="architecture"):
        create_model("tiny", checkpoint=tmp_path / "ckpt")
    with pytest.raises(InvalidInputError, match="checkpoint"):
        load_model(tmp_path / "missing")


def test_bundled_default_checkpoint_loads():
    from encoders.checkpoint import DEFAULT_CHECKPOINT

    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir())
    assert size <= 25 * 2**20
    bundle = load_model("default")
    assert bundle.model_version == (DEFAULT_CHECKPOINT / "model_version.txt").read_text().strip()
    assert bundle.config["name"] == "tiny"


def test_package_exports_resolve_lazily_and_light_modules_skip_torch():
    import subprocess
    import sys

    import encoders
    from encoders.backbone import load_encoder
    from encoders.factory import load_model as factory_load_model

    assert encoders.load_encoder is load_encoder and encoders.load_model is factory_load_model
    with pytest.raises(AttributeError, match="no attribute"):
        encoders.not_a_name  # noqa: B018
    # A fresh interpreter: this one has torch loaded already.
    probe = ("import sys, encoders.errors, encoders.labelsets, encoders.config; "
             "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def mean_query_bundle():
    config = resolve_config("test")
    config["text"]["pooling"] = "mean_query"
    config["xray"]["stem"] = "conv"
    config["ecg"]["stem"] = "patch_conv"
    torch.manual_seed(0)
    bundle = create_model(config)
    make_adapters_matter(bundle.model.text)
    return bundle


def test_mean_query_pooling_ignores_padding_and_trains_the_top_layer(mean_query_bundle):
    bundle = mean_query_bundle
    model = bundle.model.eval()
    with torch.no_grad():
        alone = model.encode_text(**bundle.tokenizer(REPORTS[1:2]))
        padded = model.encode_text(**bundle.tokenizer(REPORTS))[1:2]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)
    # At zero LoRA the pooled row is the top layer applied to the mean of the rows below.
    features = model.text(**bundle.tokenizer(REPORTS))
    (features * torch.randn_like(features)).sum().backward()
    grads = [p.grad for n, p in model.text.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_mean_query_capture_is_exact_and_top_layer_attends_from_one_row(mean_query_bundle):
    bundle = mean_query_bundle
    model = bundle.model.eval()
    tokens = bundle.tokenizer(REPORTS)
    with torch.no_grad():
        plain = model.encode_text(**tokens)
    with model.capture_attention(keep_graph=True) as captured:
        z = model.encode_text(**tokens)
    torch.testing.assert_close(z.detach(), plain, atol=1e-5, rtol=1e-4)
    length = tokens["input_ids"].shape[1]
    heads = bundle.config["text"]["hf_config"]["num_attention_heads"]
    *below, top = captured["text"]
    assert [tuple(a.shape) for a in below] == [(3, heads, length, length)]
    assert tuple(top.shape) == (3, heads, 1, length)
    torch.testing.assert_close(top.sum(-1), torch.ones(3, heads, 1))
    padding = (tokens["attention_mask"] == 0)[:, None, None, :].expand_as(top)
    assert padding.any() and float(top[padding].abs().sum()) == 0.0  # padding is never read


def test_conv_stem_keeps_the_token_grid_and_refuses_odd_patches(mean_query_bundle):
    model = mean_query_bundle.model.eval()
    cfg = mean_query_bundle.config["xray"]
    pixels = torch.randn(2, 1, cfg["image_size"], cfg["image_size"])
    with model.capture_attention() as captured, torch.no_grad():
        z = model.encode_xray(pixels)
    assert z.shape == (2, mean_query_bundle.config["embed_dim"])
    n = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
    assert captured["xray"][0].shape[-1] == n == model.xray.num_tokens
    # CPU batches run the stem in chunks: the same numbers as the whole batch at once.
    stem = model.xray.vit.conv1
    many = torch.randn(2 * stem.CPU_CHUNK + 3, 1, cfg["image_size"], cfg["image_size"])
    with torch.no_grad():
        torch.testing.assert_close(stem(many), torch.nn.Sequential(*stem)(many), rtol=1e-5, atol=1e-6)
    config = resolve_config("test")
    config["xray"].update(stem="conv", image_size=36, patch_size=6)
    with pytest.raises(InvalidInputError, match="power of two"):
        create_model(config)
    config["xray"].update(stem="hybrid", patch_size=4)
    with pytest.raises(InvalidInputError, match="config.xray.stem"):
        create_model(config)


def test_ecg_patch_conv_stem_keeps_the_token_grid_and_the_voltage(mean_query_bundle):
    from encoders.ecg_encoder import stem_strides

    assert [stem_strides(p) for p in (25, 50, 10, 7, 1)] == [[5, 5], [2, 5, 5], [2, 5], [7], []]
    model = mean_query_bundle.model.eval()
    cfg = mean_query_bundle.config["ecg"]
    n_samples = int(cfg["sample_rate"] * cfg["seconds"])
    signals, mask = torch.randn(2, 12, n_samples), torch.ones(2, 12, dtype=torch.bool)
    tokens = model.ecg.patch_embed(signals)
    assert tokens.shape == (2, cfg["width"], n_samples // cfg["patch_samples"])
    with model.capture_attention() as captured, torch.no_grad():
        z = model.encode_ecg(signals, mask)
    assert z.shape == (2, mean_query_bundle.config["embed_dim"])
    assert captured["ecg"][0].shape[-1] == model.ecg.num_tokens
    # The event branch starts at zero (the plain patch model) and is trained.
    stem = create_model(mean_query_bundle.config).model.ecg.patch_embed
    with torch.no_grad():
        torch.testing.assert_close(stem(signals), stem.linear(signals))
        stem.events[-1].weight.normal_(std=0.1)  # make the branch matter for the checks below
        tokens = stem(signals)
        assert not torch.allclose(tokens, stem.linear(signals), atol=1e-3)
        # No normalisation divides the voltage out: a record at twice the voltage gets other features.
        assert not torch.allclose(stem(2 * signals), tokens, atol=1e-3)
    assert all(p.requires_grad for p in stem.parameters())
    config = resolve_config("test")
    config["ecg"]["stem"] = "wavelet"
    with pytest.raises(InvalidInputError, match="config.ecg.stem"):
        create_model(config)


def _pulse_train(n_samples: int, sample_rate: float, bpm: float, phase_s: float = 0.0) -> torch.Tensor:
    """[12, n_samples]: a narrow spike per beat in every lead, a crude ECG whose only content is its rate."""
    t = torch.arange(n_samples) / sample_rate
    rr = 60.0 / bpm
    beat = torch.exp(-0.5 * (((t - phase_s) % rr) / 0.02) ** 2)
    return beat.expand(12, -1).clone()


def test_ecg_rhythm_token_reads_rate_from_the_whole_record_and_ignores_absent_leads():
    config = resolve_config("test")
    config["ecg"]["rhythm_token"] = True
    torch.manual_seed(0)
    model = create_model(config).model.eval()
    ecg = model.ecg
    cfg = config["ecg"]
    n_samples, rate = int(cfg["sample_rate"] * cfg["seconds"]), float(cfg["sample_rate"])
    assert ecg.num_tokens == n_samples // cfg["patch_samples"] + 2
    slow, fast = _pulse_train(n_samples, rate, 60.0), _pulse_train(n_samples, rate, 150.0)
    everything = torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        token = ecg.rhythm(slow[None], everything)
        # Same rhythm, other moment: the amplitude spectrum does not care where the beats fall.
        torch.testing.assert_close(ecg.rhythm(slow.roll(7, dims=-1)[None], everything), token, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(ecg.rhythm(fast[None], everything), token, atol=1e-2)
        # An absent lead is left out of the mean instead of counting as a flat one.
        some = everything.clone()
        some[0, 6:] = False
        noisy = slow.clone()
        noisy[6:] = torch.randn(6, n_samples)
        torch.testing.assert_close(ecg.rhythm(noisy[None], some), token, atol=1e-5, rtol=1e-5)
        # The token reaches the embedding, and the captured attention has one more column for it.
        with model.capture_attention() as captured:
            z_slow = model.encode_ecg(slow[None], everything)
        assert captured["ecg"][0].shape[-1] == ecg.num_tokens
        assert not torch.allclose(model.encode_ecg(fast[None], everything), z_slow, atol=1e-3)
    # A recorded but flat lead has a zero spectrum; input gradients (explanations) must stay finite there.
    flat = slow.clone()
    flat[7] = 0.0
    flat.requires_grad_(True)
    ecg.rhythm(flat[None], everything).sum().backward()
    assert torch.isfinite(flat.grad).all()
    config["ecg"]["rhythm_token"] = "yes"
    with pytest.raises(InvalidInputError, match="config.ecg.rhythm_token"):
        create_model(config)


def test_ecg_explanations_skip_the_rhythm_token():
    from encoders.explain import explain, label_target
    from encoders.explain.items import Item

    config = resolve_config("test")
    config["ecg"]["rhythm_token"] = True
    torch.manual_seed(0)
    bundle = create_model(config)
    cfg = config["ecg"]
    n_samples = int(cfg["sample_rate"] * cfg["seconds"])
    signals = _pulse_train(n_samples, float(cfg["sample_rate"]), 80.0) * 0.5
    some = torch.ones(12, dtype=torch.bool)
    some[3:6] = False
    for mask in (torch.ones(12, dtype=torch.bool), some):
        item = Item("ecg", {"signals": signals, "lead_mask": mask})
        for method in ("chefer", "rollout"):
            explanation = explain(bundle, item, label_target(bundle, "atrial fibrillation"), method=method)
            assert explanation.relevance.shape == (12, n_samples // cfg["patch_samples"])
            assert np.isfinite(explanation.relevance).all()


@pytest.mark.parametrize("pooling,targets,dropout", [
    ("mean_query", ["query", "key", "value", "dense"], 0.0),
    ("cls", ["query", "value"], 0.1),  # key not adapted: its cached projection is the whole key
])
def test_cached_key_value_projections_match_the_live_top_layer(pooling, targets, dropout):
    """With one trainable layer under one-row pooling, the prefix cache also holds that layer's frozen
    key/value projections; output and LoRA gradients must match the uncached layer (fp16 cache),
    LoRA dropout included (same seed, same masks)."""
    config = resolve_config("test")
    config["text"]["pooling"] = pooling
    config["text"]["lora"].update(target_modules=targets, dropout=dropout, top_layers=1)
    torch.manual_seed(0)
    bundle = create_model(config)
    text = bundle.model.text
    make_adapters_matter(text)
    tokens = bundle.tokenizer(REPORTS)
    weights = torch.randn(len(REPORTS), text.width, generator=torch.Generator().manual_seed(2))
    text.train()
    live, live_grads = output_and_lora_grads(text, tokens, weights, cached=False)
    cached, cached_grads = output_and_lora_grads(text, tokens, weights, cached=True)
    assert text._cache and all(key.startswith(b"kv:") for key in text._cache)
    torch.testing.assert_close(cached, live, atol=2e-3, rtol=2e-3)
    assert live_grads.keys() == cached_grads.keys()
    for name, grad in live_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, atol=5e-3, rtol=5e-3, msg=name)


def test_prefix_cache_stays_within_its_byte_budget(bundle):
    model = copy.deepcopy(bundle.model).eval()
    tokens = bundle.tokenizer(REPORTS)
    with torch.no_grad():
        fresh = model.encode_text(**tokens)
        model.text.enable_prefix_cache(max_bytes=1)  # nothing fits
        model.encode_text(**tokens)
        assert len(model.text._cache) == 0 and model.text._cache.bytes == 0
        torch.testing.assert_close(model.encode_text(**tokens), fresh, atol=1e-3, rtol=1e-3)
        model.text.enable_prefix_cache()
        model.encode_text(**tokens)
        cache = model.text._cache
        assert len(cache) == len(REPORTS)
        assert cache.bytes == sum(row.numel() * row.element_size() for row in cache.values())


def test_xray_registers_join_attention_but_not_the_map_and_round_trip(tmp_path):
    from encoders.explain import explain, label_target
    from encoders.explain.items import Item
    from training.schedule import adamw_groups

    config = resolve_config("test")
    for bad in (-1, True, 65, 2.0):
        config["xray"]["registers"] = bad
        with pytest.raises(InvalidInputError, match="config.xray.registers"):
            resolve_config(config)
    config["xray"]["registers"] = 3
    torch.manual_seed(0)
    bundle = create_model(config)
    model = bundle.model.eval()
    cfg = config["xray"]
    grid = cfg["image_size"] // cfg["patch_size"]
    pixels = torch.randn(2, 1, cfg["image_size"], cfg["image_size"], generator=torch.Generator().manual_seed(3))
    with model.capture_attention() as captured, torch.no_grad():
        z = model.encode_xray(pixels)
    assert model.xray.num_tokens == grid * grid + 1 + 3 == captured["xray"][0].shape[-1]
    with torch.no_grad():
        torch.testing.assert_close(model.encode_xray(pixels), z)  # capture does not change the output
        # The registers are read: other register values, another embedding (a random change: ln_pre
        # would take out a constant one).
        saved = model.xray.register_tokens.clone()
        model.xray.register_tokens.add_(torch.randn(saved.shape, generator=torch.Generator().manual_seed(4)))
        assert not torch.allclose(model.encode_xray(pixels), z)
        model.xray.register_tokens.copy_(saved)
    # Learned inputs like the class embedding: no weight decay.
    no_decay = {id(p) for p in adamw_groups(model, 0.05)[1]["params"]}
    assert id(model.xray.register_tokens) in no_decay
    item = Item("xray", {"pixels": pixels[0]})
    for method in ("chefer", "rollout"):
        explanation = explain(bundle, item, label_target(bundle, "cardiomegaly"), method=method)
        assert explanation.relevance.shape == (grid, grid) and np.isfinite(explanation.relevance).all()
    version = save_checkpoint(bundle, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.model_version == version and loaded.model.xray.num_registers == 3
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_xray(pixels), z, atol=5e-3, rtol=0)  # fp16 matrices
    # Without the key the tower is open_clip's own forward, and the key is not written into the config.
    assert "registers" not in resolve_config("test")["xray"] and create_model("test").model.xray.num_registers == 0
