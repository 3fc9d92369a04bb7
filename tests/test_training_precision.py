"""bf16 autocast training (`tribind train --precision`): when it is chosen, what stays fp32."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from encoders import create_model, load_model
from encoders.errors import InvalidInputError
from training import precision as precision_module
from training import train as train_module
from training.precision import cpu_has_native_bf16, fastest_precision, resolve_precision
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


def _ticking(costs: dict[str, float], first_call_extra: float = 0.0):
    """A fake clock and a step that advances it by `costs[precision]` (plus `first_call_extra` the
    first time each precision runs, as oneDNN's kernel building does)."""
    now, calls = [0.0], []

    def step(precision: str) -> None:
        calls.append(precision)
        now[0] += costs[precision] + (first_call_extra if calls.count(precision) == 1 else 0.0)

    return step, (lambda: now[0]), calls


@pytest.mark.parametrize("costs, expected", [({"bf16": 0.6, "fp32": 0.45}, "fp32"),
                                             ({"bf16": 0.15, "fp32": 0.27}, "bf16"),
                                             ({"bf16": 0.29, "fp32": 0.30}, "fp32")])  # within 5 %: fp32
def test_fastest_precision_times_both_and_ignores_the_first_call(costs, expected):
    step, clock, calls = _ticking(costs, first_call_extra=5.0)
    chosen, seconds = fastest_precision(step, repeats=3, clock=clock)
    assert chosen == expected
    assert seconds == pytest.approx(costs)          # the warm-up calls (5 s more) are not counted
    assert calls == ["bf16", "fp32"] * 4            # interleaved: a slow spell hits both
    with pytest.raises(InvalidInputError, match="repeats"):
        fastest_precision(step, repeats=0)


def test_one_stray_slow_pass_does_not_decide():
    """Median, not mean: a pass that a neighbour's burst slows threefold is outvoted."""
    now, fp32_calls = [0.0], [0]

    def step(precision: str) -> None:
        if precision == "fp32":
            fp32_calls[0] += 1
            now[0] += 0.60 if fp32_calls[0] == 3 else 0.20
        else:
            now[0] += 0.25

    chosen, seconds = fastest_precision(step, repeats=5, clock=lambda: now[0])
    assert chosen == "fp32" and seconds == pytest.approx({"bf16": 0.25, "fp32": 0.20})


def _run(tmp_path, name, precision):
    out = tmp_path / name
    train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(out), threads=1, seed=3,
                       progress=False, warmup_steps=1, precision=precision))
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return start, load_model(out).model.state_dict()


def test_auto_on_a_native_bf16_cpu_trains_in_the_precision_the_probe_measured_faster(tmp_path, monkeypatch):
    """The probe runs real forward+backward passes of the first batch, yet the run it precedes is
    bit for bit the run without it: it restores the RNG and drops its gradients."""
    real = train_module.fastest_precision

    def fp32_wins(step, repeats=5):
        inner, clock, _ = _ticking({"bf16": 2.0, "fp32": 1.0})
        return real(lambda p: (step(p), inner(p)), repeats, clock=clock)

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(train_module, "fastest_precision", fp32_wins)
    probed, probed_weights = _run(tmp_path, "auto", "auto")
    assert probed["precision"] == "fp32"
    assert probed["precision_probe_ms"] == {"bf16": 2000.0, "fp32": 1000.0}
    plain, plain_weights = _run(tmp_path, "fp32", "fp32")
    assert "precision_probe_ms" not in plain
    assert probed_weights.keys() == plain_weights.keys()
    for key, tensor in plain_weights.items():
        assert torch.equal(tensor, probed_weights[key]), key


def test_no_probe_where_the_choice_is_not_open(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_module, "fastest_precision", lambda *a, **k: calls.append(1) or ("fp32", {}))
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    start, _ = _run(tmp_path, "emulated", "auto")          # no native bf16: fp32 without timing
    assert start["precision"] == "fp32" and "precision_probe_ms" not in start
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    start, _ = _run(tmp_path, "asked", "bf16")              # asked for: honoured, not second-guessed
    assert start["precision"] == "bf16" and "precision_probe_ms" not in start
    assert calls == []
