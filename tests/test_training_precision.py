"""bf16 autocast training (`tribind train --precision`): when it is chosen, what stays fp32."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from encoders import create_model, load_model
from encoders.errors import InvalidInputError
from training import precision as precision_module
from training.precision import cpu_has_native_bf16, resolve_precision
from training.train import TrainOptions, train

REPORTS = ["Cardiomegaly. Small left pleural effusion. Sinus rhythm.", "Normal chest radiograph. Normal ECG.",
           "No pneumothorax. Atrial fibrillation with left ventricular hypertrophy."]


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "zen4"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "skylake"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n")
    assert cpu_has_native_bf16(with_bf16)
    assert not cpu_has_native_bf16(without)  # avx512bw alone would emulate bf16: slower than fp32
    assert not cpu_has_native_bf16(tmp_path / "absent")


def test_auto_picks_bf16_only_where_it_is_native(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for: honoured
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(InvalidInputError, match="precision: 'half' is not one of auto, bf16, fp32"):
        resolve_precision("half", cpu)


def test_the_frozen_text_prefix_is_cached_in_fp32_inside_a_bf16_step():
    """The cache's rows must not depend on the step's precision: serving computes them in fp32."""
    bundle = create_model("test")
    tokens = bundle.tokenizer(REPORTS)
    caches = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        model = copy.deepcopy(bundle.model).train()
        model.text.enable_prefix_cache()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            model.encode_text(**tokens)
        caches[name] = dict(model.text._cache)
    assert caches["fp32"].keys() == caches["bf16"].keys() and len(caches["fp32"]) == len(REPORTS)
    for key, row in caches["fp32"].items():
        assert torch.equal(row, caches["bf16"][key])


@pytest.mark.parametrize("requested", ["bf16", "fp32"])
def test_training_at_either_precision_saves_fp32_weights_and_logs_it(tmp_path, requested):
    out = tmp_path / requested
    summary = train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(out), threads=1,
                                 progress=False, warmup_steps=1, precision=requested))
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["precision"] == requested
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in events if e["event"] == "step")
    model = load_model(out).model
    assert summary["steps"] == 3
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_an_unknown_precision_fails_before_training(tmp_path):
    with pytest.raises(InvalidInputError, match="precision"):
        train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(tmp_path / "x"), threads=1,
                           progress=False, precision="fp8"))
    assert not (tmp_path / "x" / "model.safetensors").exists()
