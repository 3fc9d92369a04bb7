"""Platt fitting, the calibration file and its model_version guard (no model, no torch forward passes)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from encoders.calibration import CALIBRATION_FILE, Calibration, PlattMap
from encoders.errors import InvalidInputError
from training.calibrate import ece, fit_platt, top_k_rate


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_fit_recovers_a_known_platt_map():
    rng = np.random.default_rng(0)
    margins = rng.normal(0.05, 0.1, 40_000)
    truth = rng.random(margins.size) < _sigmoid(20.0 * margins - 1.5)
    fitted = fit_platt(margins, truth)
    assert fitted.a == pytest.approx(20.0, rel=0.05)
    assert fitted.b == pytest.approx(-1.5, abs=0.08)
    assert fitted.positives == int(truth.sum()) and fitted.negatives == int((~truth).sum())


def test_few_or_no_positives_give_the_smoothed_prior_not_certainty():
    rng = np.random.default_rng(1)
    margins = rng.normal(0.0, 0.1, 500)
    none = fit_platt(margins, np.zeros(500, dtype=bool))
    assert none.a == 0.0 and _sigmoid(none.b) == pytest.approx(1 / 502)
    # Three positives, perfectly separated: an unregularised fit would run off to an infinite slope.
    truth = np.zeros(500, dtype=bool)
    truth[np.argsort(margins)[-3:]] = True
    few = fit_platt(margins, truth)
    assert 0 < few.a < 1e3
    assert _sigmoid(few.a * margins.max() + few.b) < 0.9


def test_a_backwards_margin_gets_a_constant_not_a_reversed_map():
    margins = np.linspace(-1, 1, 200)
    fitted = fit_platt(margins, margins < 0)
    assert fitted.a == 0.0
    with pytest.raises(InvalidInputError, match="monotone"):
        PlattMap(-1.0, 0.0, 1, 1)


def test_apply_is_monotone_per_label_and_checks_its_inputs():
    calibration = Calibration("m-1", {"phantom": {"xray": {"a": PlattMap(30.0, -4.0, 10, 90),
                                                           "b": PlattMap(0.5, 2.0, 80, 20)}}})
    grid = np.linspace(-0.5, 0.5, 101)
    probs = calibration.apply(["a", "b"], "xray", np.stack([grid, grid], axis=1))
    assert probs.shape == (101, 2)
    assert np.all(np.diff(probs, axis=0) > 0)
    assert np.allclose(probs[:, 0], _sigmoid(30.0 * grid - 4.0))
    assert calibration.covers("phantom", "xray", ["b", "a"])
    assert not calibration.covers("phantom", "xray", ["a", "c"]) and not calibration.covers("phantom", "ecg", ["a"])
    with pytest.raises(InvalidInputError, match="not calibrated"):
        calibration.apply(["a", "c"], "xray", np.zeros(2))
    with pytest.raises(InvalidInputError, match="one margin per label"):
        calibration.apply(["a", "b"], "xray", np.zeros(3))


def _write_checkpoint_dir(tmp_path, version: str, calibration: Calibration):
    (tmp_path / "model_version.txt").write_text(version + "\n")
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(calibration.to_json()))
    return tmp_path


def test_load_round_trips_and_ignores_another_model_version(tmp_path, caplog):
    calibration = Calibration("tiny-aaaa", {"phantom": {"ecg": {"lvh": PlattMap(12.5, -1.25, 40, 960)}}},
                              fitted_on={"phantom": {"seed": 4242}})
    directory = _write_checkpoint_dir(tmp_path, "tiny-aaaa", calibration)
    loaded = Calibration.load(directory)
    assert loaded is not None and loaded.label_sets == calibration.label_sets and loaded.fitted_on == calibration.fitted_on
    with caplog.at_level(logging.WARNING, logger="tribind.calibration"):
        assert Calibration.load(directory, model_version="tiny-bbbb") is None
        (directory / "model_version.txt").write_text("tiny-cccc\n")
        assert Calibration.load(directory) is None
    assert sum("fitted for model_version tiny-aaaa" in r.getMessage() for r in caplog.records) == 2
    assert Calibration.load(tmp_path / "absent") is None


def test_a_corrupt_file_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "model_version.txt").write_text("v\n")
    (tmp_path / CALIBRATION_FILE).write_text('{"format": 1, "method": "platt", "model_version": "v", '
                                             '"label_sets": {"phantom": {"xray": {"x": {"a": -2}}}}}')
    with caplog.at_level(logging.WARNING, logger="tribind.calibration"):
        assert Calibration.load(tmp_path) is None
    assert "ignoring" in caplog.text


def test_ece_and_top_k_rate():
    truth = np.array([True, False] * 50)
    assert ece(truth.astype(float), truth) == 0.0
    assert ece(np.full(100, 0.9), truth) == pytest.approx(0.4)
    prob = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.8]])
    hits = np.array([[False, False, True], [True, False, False]])
    assert top_k_rate(prob, hits, k=2) == [0.0, None, 0.0]
    assert top_k_rate(prob, np.array([[True, False, False], [False, False, True]]), k=2) == [1.0, None, 1.0]


def test_calibrate_puts_a_saturated_label_and_a_weak_one_on_one_scale():
    from types import SimpleNamespace

    import torch

    from encoders.labelsets import Label, LabelSet
    from training.calibrate import Margins, calibrate

    rng = np.random.default_rng(3)
    n = 3000
    truth = np.stack([rng.random(n) < 0.2, rng.random(n) < 0.2], axis=1)
    # "loud" sits high for every case (raw probability ~1); "quiet" is low but separates better.
    margins = np.stack([0.6 + 0.05 * truth[:, 0] + rng.normal(0, 0.05, n),
                        -0.2 + 0.15 * truth[:, 1] + rng.normal(0, 0.05, n)], axis=1)
    bundle = SimpleNamespace(model=SimpleNamespace(scale=lambda: torch.tensor(50.0)), model_version="fake-1")
    labelset = LabelSet("toy", "", tuple(Label(i, "xray", (i,), (f"no {i}",)) for i in ("loud", "quiet")))
    fitted, summary = calibrate(bundle, labelset, {"xray": Margins(("loud", "quiet"), margins, truth)}, seed=1)
    assert fitted.model_version == "fake-1" and fitted.covers("toy", "xray", ["loud", "quiet"])
    report = summary["xray"]
    assert report["fit_cases"] + report["heldout_cases"] == n
    loud, quiet = report["labels"]["loud"], report["labels"]["quiet"]
    assert loud["brier"]["after"] < loud["brier"]["before"] and loud["ece"]["after"] < 0.05
    assert quiet["auroc"]["before"] > 0.9 and quiet["brier"]["after"] < quiet["brier"]["before"]
    # Raw, "loud" outranks "quiet" on every case; calibrated, a quiet-only case puts "quiet" first.
    only_quiet = truth[:, 1] & ~truth[:, 0]
    calibrated = fitted.apply(["loud", "quiet"], "xray", margins[only_quiet], "toy")
    raw = 1 / (1 + np.exp(-50.0 * margins[only_quiet]))
    assert np.mean(raw[:, 1] > raw[:, 0]) == 0.0
    assert np.mean(calibrated[:, 1] > calibrated[:, 0]) > 0.8


def _look_alikes(n: int, seed: int):
    """'effusion' also raises the 'atelectasis' margin (the look-alike the tiny model confuses)."""
    rng = np.random.default_rng(seed)
    truth = np.stack([rng.random(n) < 0.25, rng.random(n) < 0.15], axis=1)
    margins = np.stack([0.2 * truth[:, 0] + rng.normal(0, 0.06, n),
                        0.1 * truth[:, 1] + 0.1 * truth[:, 0] + rng.normal(0, 0.05, n)], axis=1)
    return margins, truth


def test_stacked_maps_read_the_look_alike_and_separate_better():
    from types import SimpleNamespace

    import torch

    from encoders.labelsets import Label, LabelSet
    from training.calibrate import Margins, calibrate

    margins, truth = _look_alikes(4000, seed=5)
    ids = ("effusion", "atelectasis")
    bundle = SimpleNamespace(model=SimpleNamespace(scale=lambda: torch.tensor(50.0)), model_version="fake-2")
    labelset = LabelSet("toy", "", tuple(Label(i, "xray", (i,), (f"no {i}",)) for i in ids))
    stacked, summary = calibrate(bundle, labelset, {"xray": Margins(ids, margins, truth)}, seed=1)
    platt, platt_summary = calibrate(bundle, labelset, {"xray": Margins(ids, margins, truth)}, seed=1, method="platt")
    atelectasis = stacked.label_sets["toy"]["xray"]["atelectasis"]
    assert atelectasis.a > 0 and atelectasis.cross["effusion"] < 0   # an effusion explains part of its margin
    assert not platt.label_sets["toy"]["xray"]["atelectasis"].cross
    report, platt_report = summary["xray"]["labels"]["atelectasis"], platt_summary["xray"]["labels"]["atelectasis"]
    assert platt_report["auroc"]["after"] == pytest.approx(platt_report["auroc"]["before"])  # monotone
    assert report["auroc"]["after"] > report["auroc"]["before"] + 0.03
    assert report["brier"]["after"] < platt_report["brier"]["after"]
    # On fresh cases too, and through the file format.
    again = Calibration.from_json(json.loads(json.dumps(stacked.to_json())))
    assert again.to_json()["method"] == "stacked" and again.to_json()["format"] == 2
    fresh, fresh_truth = _look_alikes(3000, seed=9)
    prob = again.apply(list(ids), "xray", fresh, "toy")
    from training.metrics import auroc

    assert auroc(fresh_truth[:, 1], prob[:, 1]) > auroc(fresh_truth[:, 1], fresh[:, 1]) + 0.03
    # Columns may come in any order; a stacked map cannot be applied without the margins it reads.
    np.testing.assert_allclose(again.apply(list(ids[::-1]), "xray", fresh[:, ::-1], "toy"), prob[:, ::-1])
    assert again.covers("toy", "xray", list(ids)) and not again.covers("toy", "xray", ["atelectasis"])
    with pytest.raises(InvalidInputError, match="effusion"):
        again.apply(["atelectasis"], "xray", fresh[:, 1:], "toy")


def test_a_negative_own_weight_is_held_at_zero_the_constrained_optimum():
    """An own margin its look-alike repeats (own = s + c, look-alike = 2 s + c, truth in s): the free fit
    weights own negatively; the constrained fit is the bounded optimum, not the label's Platt map."""
    from scipy.optimize import minimize

    from training.calibrate import fit_platt, fit_stacked
    from training.metrics import auroc

    rng = np.random.default_rng(3)
    n = 4000
    truth = rng.random(n) < 0.3
    signal = 0.1 * truth + rng.normal(0, 0.03, n)
    confound = rng.normal(0, 0.1, n)
    margins = np.stack([signal + confound, 2 * signal + confound], axis=1)
    ids = ("left", "right")
    fitted = fit_stacked(margins, truth, ids, own=0)
    assert fitted.a == 0.0 and fitted.cross["right"] > 0
    platt = fit_platt(margins[:, 0], truth)
    maps = {"left": fitted, "right": fit_stacked(margins, truth, ids, own=1)}
    prob = Calibration("m", {"toy": {"xray": maps}}).apply(list(ids), "xray", margins, "toy")
    assert auroc(truth, prob[:, 0]) > auroc(truth, margins[:, 0]) + 0.05
    assert auroc(truth, margins[:, 0]) == pytest.approx(auroc(truth, 1 / (1 + np.exp(-(platt.a * margins[:, 0] + platt.b)))))

    # The same penalised, prior-corrected problem solved with the bound by L-BFGS-B lands on our weights.
    mu, sd = margins.mean(0), margins.std(0)
    design = np.hstack([(margins - mu) / sd, np.ones((n, 1))])
    n_pos = int(truth.sum())
    target = np.where(truth, (n_pos + 1) / (n_pos + 2), 1 / (n - n_pos + 2))

    def loss(w):
        s = design @ w
        grad = design.T @ (1 / (1 + np.exp(-s)) - target)
        grad[:-1] += w[:-1]
        return np.sum(np.logaddexp(0, s) - target * s) + 0.5 * np.sum(w[:-1] ** 2), grad

    bounded = minimize(loss, np.zeros(3), jac=True, method="L-BFGS-B", bounds=[(0, None), (None, None), (None, None)],
                       options={"ftol": 1e-14, "gtol": 1e-10}).x
    assert bounded[0] == pytest.approx(0.0, abs=1e-6)
    assert fitted.cross["right"] == pytest.approx(bounded[1] / sd[1], rel=1e-4)
    assert fitted.b == pytest.approx(bounded[2] - bounded[1] / sd[1] * mu[1], rel=1e-4, abs=1e-6)
