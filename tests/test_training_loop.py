"""The training loop on the `test` preset: one process with resume, and two gloo processes via torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encoders import load_model
from training.case_tensors import build_case_tensors
from encoders.errors import InvalidInputError
from training.train import TrainOptions, _label_findings, epoch_batches, findings_by_modality, train

REPO = Path(__file__).resolve().parents[1]


def _events(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_train_saves_loadable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    opts = TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(out), threads=1, progress=False,
                        warmup_steps=1)
    first = train(opts)
    assert first["steps"] == 3 and first["cases"] == 24
    bundle = load_model(out)
    assert bundle.model_version == first["model_version"]
    steps = [e for e in _events(out) if e["event"] == "step"]
    assert steps and {"loss", "loss_xray_text", "loss_ecg_text", "loss_xray_ecg", "lr", "samples_per_s"} <= set(steps[-1])
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
    opts.epochs, opts.resume = 2, True
    second = train(opts)
    assert second["steps"] == 6  # continued from step 3, did not start over
    assert second["model_version"] != first["model_version"]


def test_init_from_a_checkpoint_with_frozen_towers(tmp_path, capsys):
    base = tmp_path / "base"
    opts = TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(base), threads=1, progress=False,
                        warmup_steps=1)
    train(opts)
    opts.out, opts.init_from, opts.freeze, opts.preset = str(tmp_path / "adapted"), str(base), ("xray", "ecg"), None
    opts.lr = 1e-2
    adapted = train(opts)
    before, after = load_model(base).model.state_dict(), load_model(tmp_path / "adapted").model.state_dict()
    assert adapted["model_version"] != load_model(base).model_version
    for name, tensor in before.items():
        same = torch.equal(tensor, after[name])
        if name.startswith(("xray.", "xray_proj.", "ecg.", "ecg_proj.")):
            assert same, f"{name} changed though its tower was frozen"
    lora = [n for n in before if "lora_" in n or n.startswith("text_proj.")]
    assert lora and any(not torch.equal(before[n], after[n]) for n in lora)  # the text tower trained

    with pytest.raises(InvalidInputError, match="freeze: unknown tower"):
        train(TrainOptions(preset="test", freeze=("lungs",), out=str(tmp_path / "x")))
    with pytest.raises(InvalidInputError, match="at most two"):
        train(TrainOptions(preset="test", freeze=("xray", "ecg", "text"), out=str(tmp_path / "x")))
    with pytest.raises(InvalidInputError, match="not a checkpoint directory"):
        train(TrainOptions(init_from=str(tmp_path / "nowhere"), out=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()  # refused before anything was written
    from tribind.cli import main

    assert main(["train", "--preset", "test", "--init-from", str(base), "--out", str(tmp_path / "y")]) == 2
    assert main(["train", "--preset", "nosuch", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "leave out --preset" in err and "unknown preset 'nosuch'" in err and "Traceback" not in err


def test_frozen_towers_are_embedded_once_in_eval_mode(tmp_path, monkeypatch):
    from encoders.factory import create_model
    from encoders.joint_model import TriBindModel
    from training.phantom_dataset import phantom_case_tensors
    from training.train import _batch_inputs, frozen_embedding_cache

    torch.manual_seed(0)
    bundle = create_model("test")
    data = phantom_case_tensors(bundle, 12, seed=3, workers=1)
    bundle.model.train()
    opts = TrainOptions(preset="test")
    cache = frozen_embedding_cache(bundle, data, opts, ("xray", "text"), torch.device("cpu"), "fp32")
    assert set(cache) == {"xray", "text"} and bundle.model.training  # the mode is put back
    rows = torch.nonzero(data.has_xray).flatten()
    bundle.model.eval()
    with torch.no_grad():
        expected = bundle.model.encode_xray(data.pixels[rows].float())
    torch.testing.assert_close(cache["xray"][rows], expected, rtol=1e-4, atol=1e-5)
    assert not cache["xray"][~data.has_xray].any()  # absent films stay zero rows
    # Inputs that change per step cannot be cached: that tower keeps running in the loop.
    assert set(frozen_embedding_cache(bundle, data, TrainOptions(augment=True), ("xray", "text"),
                                      torch.device("cpu"), "fp32")) == {"text"}
    assert set(frozen_embedding_cache(bundle, data, TrainOptions(sentence_sampling=0.5), ("text",),
                                      torch.device("cpu"), "fp32")) == set()
    assert frozen_embedding_cache(bundle, data, TrainOptions(cache_frozen=False), ("xray",),
                                  torch.device("cpu"), "fp32") == {}
    batch, present = _batch_inputs(bundle, data, torch.arange(8), torch.device("cpu"), skip=("xray", "text"))
    assert "pixels" not in batch and "input_ids" not in batch and "signals" in batch
    assert torch.equal(present["xray"], data.has_xray[:8])

    # In a run: the frozen X-ray tower is called once per 64 films to fill the cache, never in the loop.
    calls = {"xray": 0}
    original = TriBindModel.encode_xray

    def counting(self, pixels):
        calls["xray"] += 1
        return original(self, pixels)

    monkeypatch.setattr(TriBindModel, "encode_xray", counting)
    base = tmp_path / "base"
    # fp32 asked for: on a CPU with native bf16, `auto` would time a few passes first (training.precision).
    train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(base), threads=1, progress=False,
                       warmup_steps=1, precision="fp32"))
    assert calls["xray"] == 3  # three steps, every one with films
    calls["xray"] = 0
    train(TrainOptions(init_from=str(base), freeze=("xray", "ecg"), cases=24, epochs=2, batch_size=8,
                       out=str(tmp_path / "cached"), threads=1, progress=False, warmup_steps=1, precision="fp32"))
    assert calls["xray"] == 1 and _events(tmp_path / "cached")[0]["cached_towers"] == ["ecg", "xray"]
    calls["xray"] = 0
    from tribind.cli import main

    assert main(["train", "--init-from", str(base), "--freeze", "xray,ecg", "--no-cache-frozen", "--cases", "24",
                 "--epochs", "2", "--batch-size", "8", "--warmup-steps", "1", "--threads", "1", "--no-progress",
                 "--precision", "fp32", "--out", str(tmp_path / "per_step")]) == 0
    assert calls["xray"] == 6 and _events(tmp_path / "per_step")[0]["cached_towers"] == []  # 2 epochs x 3 steps


def test_epoch_batches_cover_cases_once_and_group_lengths():
    reports = [("word " * n).strip() for n in (1, 50, 2, 40, 3, 30, 4, 20, 5, 10, 6, 60)]
    data = build_case_tensors(_StubBundle(), [(f"c{i}", (), None, None, r) for i, r in enumerate(reports)])
    batches = epoch_batches(data, seed=1, global_batch=4, window=3)
    flat = torch.cat(batches).tolist()
    assert sorted(flat) == list(range(12)) and all(len(b) == 4 for b in batches)
    spans = [max(len(reports[i]) for i in b) - min(len(reports[i]) for i in b) for b in batches]
    assert min(spans) < max(len(r) for r in reports) / 2  # sorted windows make compact batches


def test_two_gloo_processes_train(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tribind", "train", "--preset", "test", "--cases", "32", "--epochs", "1", "--batch-size", "8",
           "--warmup-steps", "1", "--out", str(out), "--threads", "1", "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    start = _events(out)[0]
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 2  # 32 cases / (8 per rank x 2 ranks)
    assert load_model(out).model_version == _events(out)[-1]["model_version"]


class _StubBundle:
    """Just enough of a ModelBundle for text-only cases (no preprocessing is called)."""

    config = {"xray": {"image_size": 8}, "ecg": {"sample_rate": 10, "seconds": 1}}


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_sentence_sampling_keeps_order_and_whole_sentences():
    from training.train import sample_sentences

    report = "FINDINGS: No pneumothorax. The heart is enlarged.\nIMPRESSION: Cardiomegaly.\nSinus rhythm."
    sentences = ["FINDINGS: No pneumothorax.", "The heart is enlarged.", "IMPRESSION: Cardiomegaly.", "Sinus rhythm."]
    generator = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(40):
        sample = sample_sentences(report, generator)
        picked = [s for s in sentences if s in sample]
        assert 1 <= len(picked) <= 3 and sample == " ".join(picked)  # whole sentences, original order
        seen.add(sample)
    assert len(seen) > 5
    assert sample_sentences("Cardiomegaly.", generator) == "Cardiomegaly."


def test_sampled_reports_bypass_the_prefix_cache():
    import copy

    from encoders import create_model
    from training.train import _batch_inputs

    bundle = create_model("test")
    model = copy.deepcopy(bundle.model)
    model.text.enable_prefix_cache()
    reports = ["Cardiomegaly. No effusion. Sinus rhythm.", "Normal chest radiograph. Normal ECG.",
               "Left pleural effusion. Atrial fibrillation. LVH."]
    data = build_case_tensors(bundle, [(f"c{i}", (), None, None, r) for i, r in enumerate(reports)])
    generator = torch.Generator().manual_seed(0)
    batch, _ = _batch_inputs(bundle, data, torch.arange(3), torch.device("cpu"), 1.0, generator)
    assert not batch["text_cache_rows"].any()
    model.eval()
    with torch.no_grad():
        sampled = model(batch)["text"]
        assert len(model.text._cache) == 0  # one-off texts are not cached ...
        whole, _ = _batch_inputs(bundle, data, torch.arange(3), torch.device("cpu"))
        assert whole["text_cache_rows"].all()
        model(whole)
    assert len(model.text._cache) == 3  # ... whole reports are
    with torch.no_grad():
        again = model.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(sampled, again, atol=1e-3, rtol=1e-3)


def test_pretokenised_reports_give_the_tokenizers_batch():
    """Training tokenises every report once (`tokenise_reports`) and pads per batch; the batch must be the
    one the tokenizer gives, cases without a report included, and sampled sentences still tokenised."""
    from encoders import create_model
    from training.train import _batch_inputs, tokenise_reports

    bundle = create_model("test")
    reports = ["Cardiomegaly. No effusion. Sinus rhythm.", None, "Normal chest radiograph.",
               "Left pleural effusion. Atrial fibrillation. LVH. " * 8]
    data = build_case_tensors(bundle, [(f"c{i}", (), None, None, r) for i, r in enumerate(reports)])
    tokens = tokenise_reports(bundle, data.reports)
    rows = torch.tensor([3, 0, 1, 2])
    live, _ = _batch_inputs(bundle, data, rows, torch.device("cpu"))
    reused, _ = _batch_inputs(bundle, data, rows, torch.device("cpu"), report_tokens=tokens)
    assert live["input_ids"].shape == (3, bundle.config["text"]["max_length"])  # the long report is truncated
    for key in ("input_ids", "attention_mask", "text_cache_rows"):
        assert torch.equal(live[key], reused[key])
    generator = torch.Generator().manual_seed(0)
    sampled, _ = _batch_inputs(bundle, data, rows, torch.device("cpu"), 1.0, generator, report_tokens=tokens)
    assert not torch.equal(sampled["input_ids"], live["input_ids"])


def _labelled_cases(labels: list[tuple[str, ...]]):
    from encoders.factory import create_model

    bundle = create_model("test")
    return build_case_tensors(bundle, [(f"c{i}", case, None, None, "A report.") for i, case in enumerate(labels)])


def test_findings_by_modality_keeps_what_each_modality_shows():
    data = _labelled_cases([("cardiomegaly", "atrial_fibrillation"), ("normal",), ("lvh", "unknown_label")])
    findings = findings_by_modality(data, "phantom")
    from encoders.labelsets import load_labelset

    xray_ids = [label.id for label in load_labelset("phantom").for_modality("xray", include_both=False)]
    ecg_ids = [label.id for label in load_labelset("phantom").for_modality("ecg", include_both=False)]
    assert findings["xray"].shape == (3, len(xray_ids)) and findings["ecg"].shape == (3, len(ecg_ids))
    assert findings["xray"][0].tolist() == [i == "cardiomegaly" for i in xray_ids]
    assert findings["ecg"][0].tolist() == [i == "atrial_fibrillation" for i in ecg_ids]
    assert not findings["xray"][1].any() and not findings["ecg"][1].any()  # "normal" is no finding
    assert findings["ecg"][2].tolist() == [i == "lvh" for i in ecg_ids] and not findings["xray"][2].any()


def test_label_targets_need_a_label_set_that_matches_the_data():
    data = _labelled_cases([("cardiomegaly",), ("normal",)])
    assert _label_findings(data, TrainOptions(data="phantom"), 0.0) is None  # one-hot targets: no labels needed
    with pytest.raises(InvalidInputError, match="--label-set") as err:
        _label_findings(data, TrainOptions(data="cases.csv"), 0.5)
    assert err.value.field == "label_set"
    with pytest.raises(InvalidInputError, match="no case carries"):
        _label_findings(data, TrainOptions(data="cases.csv", label_set="ptbxl_super"), 0.5)
    assert _label_findings(data, TrainOptions(data="cases.csv", label_set="phantom"), 0.5)["xray"].any()


def test_training_with_label_targets_runs_and_logs_the_text_pairs(tmp_path):
    from encoders.config import resolve_config

    preset = resolve_config("test")
    preset["loss"]["label_targets"] = 0.5
    path = tmp_path / "test_label_targets.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "run"
    summary = train(TrainOptions(preset=str(path), cases=24, epochs=1, batch_size=8, out=str(out), threads=1,
                                 progress=False, warmup_steps=1))
    assert summary["steps"] == 3
    steps = [e for e in _events(out) if e["event"] == "step"]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
    assert load_model(out).config["loss"]["label_targets"] == 0.5


def test_label_targets_of_one_run_are_saved_in_its_config(tmp_path, capsys):
    base = tmp_path / "base"
    train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(base), threads=1, progress=False,
                       warmup_steps=1))
    assert load_model(base).config["loss"].get("label_targets", 0.0) == 0.0
    out = tmp_path / "xray_stage"
    summary = train(TrainOptions(preset=None, init_from=str(base), freeze=("ecg", "text"), label_targets={"xray_text": 0.3},
                                 cases=24, epochs=1, batch_size=8, out=str(out), threads=1, progress=False,
                                 warmup_steps=1))
    adapted = load_model(out)
    assert adapted.config["loss"]["label_targets"] == {"xray_text": 0.3, "ecg_text": 0.0}  # the other pair kept
    assert adapted.model_version == summary["model_version"]  # the config it hashes is the saved one

    for bad, match in (({"xray_ecg": 0.3}, "unknown pair"), ({"xray_text": 1.0}, r"in \[0, 1\)"),
                       ({"xray_text": float("nan")}, r"in \[0, 1\)")):
        with pytest.raises(InvalidInputError, match=match) as err:
            train(TrainOptions(init_from=str(base), label_targets=bad, out=str(tmp_path / "x")))
        assert err.value.field == "label_targets"
    from tribind.cli import main

    assert main(["train", "--init-from", str(base), "--label-targets", "xray_text:0.3", "--out", str(tmp_path / "x")]) == 2
    assert "label_targets: 'xray_text:0.3' is not PAIR=SHARE" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written
