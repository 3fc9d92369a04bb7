"""Fit per-label maps of zero-shot margins on labelled phantom cases (`tribind calibrate`).

Two methods (encoders/calibration.py): "platt", one map per label of its own margin, and "stacked"
(the default), the same logistic regression over the margins of every label of the set visible in
the modality, with the label's own slope kept >= 0. Stacking lets a label's probability read its
look-alikes: on the session-3 checkpoint tiny-013a238fcf387947 (seed 4242, held-out 30 %) it raised
X-ray AUROC for every label but pneumothorax (left effusion 0.922 -> 0.979, consolidation 0.976 ->
0.996; pneumothorax 0.750 either way) and doubled the films of seed 99 whose effusion Classify ranks
in its top 2 (README.md, Calibrated label probabilities, has the current checkpoint's figures).
Below, the Platt description holds for both; the stacked fit standardises every margin and puts the
same L2 penalty on every slope.

For every label of a label set and every modality it can be read off, the margin
`cos(case, positive ensemble) - cos(case, negative ensemble)` (the quantity `service/labels.py`
scores) is mapped to a probability by a one-feature logistic regression, `p = sigmoid(a * m + b)`
(Platt 1999). Two guards keep labels with few positives sane:

- Platt's class-prior correction: the targets are (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2)
  for negatives instead of 1 and 0, so a label seen 3 times never gets p = 1.0 and a label never
  seen gets its smoothed prior, not 0;
- an L2 penalty on the slope of the *standardised* margin, which shrinks towards the prior when the
  few positives would otherwise fix an arbitrarily steep map.

The slope is kept >= 0 (a margin that ranks a label backwards gets the constant prior), so a Platt
map is monotone and per-label AUROC is unchanged by it; a stacked map keeps its own slope >= 0 but
reads other margins too, so its AUROC moves (the summary reports it before and after). The
calibration cases are split once (seeded): the maps are fitted on one part and the Brier score, ECE,
AUROC and top-2 rate before/after are measured on the other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.calibration import Calibration, PlattMap
from encoders.errors import InvalidInputError
from encoders.factory import ModelBundle
from encoders.labelsets import LabelSet
from encoders.zero_shot import label_embeddings
from training.case_tensors import CaseTensors
from training.metrics import auroc

DEFAULT_SEED = 4242      # disjoint from the training seed (0) and the evaluation seeds (777, 99, ...)
DEFAULT_L2 = 1.0         # on the slope of the standardised margin; ~N/1000 of the data term at N=1000
DEFAULT_HOLDOUT = 0.3
ECE_BINS = 10
TOP_K = 2                # the product shows the top 2 labels of a subject


@dataclass
class Margins:
    """One modality's margins and truth for the cases that have it."""

    label_ids: tuple[str, ...]
    margins: np.ndarray      # [N, K] float64
    truth: np.ndarray        # [N, K] bool


def _penalised_logistic(z: np.ndarray, target: np.ndarray, l2: float, intercept0: float,
                        max_iter: int) -> np.ndarray:
    """Weights [K slopes..., intercept] of a logistic regression of soft `target` [N] on standardised
    features z [N, K], with an L2 penalty on the slopes (the intercept is not shrunk). Newton's method:
    the problem is strictly convex with the penalty, and K is at most a label set's size."""
    design = np.hstack([z, np.ones((z.shape[0], 1))])
    penalty = np.diag([l2] * z.shape[1] + [1e-12])
    w = np.zeros(z.shape[1] + 1)
    w[-1] = intercept0
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        grad = design.T @ (p - target) + penalty @ w
        hess = (design * (p * (1.0 - p))[:, None]).T @ design + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return w


def fit_platt(margins: np.ndarray, truth: np.ndarray, l2: float = DEFAULT_L2, max_iter: int = 100) -> PlattMap:
    """Regularised, prior-corrected Platt fit of one label: margins [N], truth [N] bool."""
    x = np.asarray(margins, dtype=np.float64).reshape(-1)
    y = np.asarray(truth, dtype=bool).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise InvalidInputError("margins", f"{x.size} margins and {y.size} truth values; give one of each per case")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("margins", "contain NaN or infinity; check the embeddings")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    prior_b = math.log((n_pos + 1.0) / (n_neg + 1.0))
    mu, sd = float(x.mean()), float(x.std())
    if sd < 1e-12 or n_pos == 0 or n_neg == 0:
        return PlattMap(0.0, prior_b, n_pos, n_neg)
    z = (x - mu) / sd
    slope, intercept = (float(v) for v in _penalised_logistic(z[:, None], target, l2, prior_b, max_iter))
    if slope <= 0:
        return PlattMap(0.0, prior_b, n_pos, n_neg)
    return PlattMap(slope / sd, intercept - slope * mu / sd, n_pos, n_neg)


def fit_stacked(margins: np.ndarray, truth: np.ndarray, label_ids: Sequence[str], own: int,
                l2: float = DEFAULT_L2, max_iter: int = 100) -> PlattMap:
    """Label `own`'s map over all margins [N, K] (columns in `label_ids` order); truth [N] bool.

    The same prior-corrected targets and L2 penalty (on standardised margins) as `fit_platt`, with the
    label's own slope constrained to >= 0 so that a higher own margin never lowers its probability.
    The problem is convex with one bound, so when the free fit puts a negative weight on the own
    margin the constrained optimum has that weight at exactly 0: the refit without the own column.
    Why not fall back to the label's Platt map there: a margin that its look-alikes nearly repeat
    (the left effusion's, 0.99 correlated with the right's on tiny-1228df984afc78d3, whose towers read
    little laterality) carries nothing of its own, and its Platt map ranked the label in the top 2 for
    5 % of its films against 39 % for the constrained fit (held-out AUROC 0.906 -> 0.972).
    """
    x = np.asarray(margins, dtype=np.float64)
    y = np.asarray(truth, dtype=bool).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.size or x.shape[1] != len(label_ids) or y.size == 0:
        raise InvalidInputError("margins", f"margins {x.shape} and {y.size} truth values; give [N, {len(label_ids)}] "
                                           "margins and one truth value per case")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("margins", "contain NaN or infinity; check the embeddings")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    mu, sd = x.mean(axis=0), x.std(axis=0)
    if n_pos == 0 or n_neg == 0 or sd[own] < 1e-12:
        return fit_platt(x[:, own], y, l2, max_iter)
    keep = sd >= 1e-12   # a constant margin carries nothing (and cannot be standardised)
    z = (x[:, keep] - mu[keep]) / sd[keep]
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    prior_b = math.log((n_pos + 1.0) / (n_neg + 1.0))
    w = _penalised_logistic(z, target, l2, prior_b, max_iter)
    slopes = np.zeros(len(label_ids))
    slopes[keep] = w[:-1] / sd[keep]
    if slopes[own] <= 0:
        keep[own] = False
        if not keep.any():
            return PlattMap(0.0, prior_b, n_pos, n_neg)
        z = (x[:, keep] - mu[keep]) / sd[keep]
        w = _penalised_logistic(z, target, l2, prior_b, max_iter)
        slopes = np.zeros(len(label_ids))
        slopes[keep] = w[:-1] / sd[keep]
    intercept = float(w[-1] - slopes[keep] @ mu[keep])
    cross = {label: float(slopes[i]) for i, label in enumerate(label_ids) if i != own and slopes[i] != 0.0}
    return PlattMap(float(slopes[own]), intercept, n_pos, n_neg, cross)


def brier(prob: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean((np.asarray(prob, dtype=np.float64) - np.asarray(truth, dtype=np.float64)) ** 2))


def ece(prob: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error over equal-width probability bins (Naeini et al. 2015)."""
    prob = np.asarray(prob, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for k in range(bins):
        inside = which == k
        if inside.any():
            total += inside.sum() / prob.size * abs(prob[inside].mean() - truth[inside].mean())
    return float(total)


def top_k_rate(prob: np.ndarray, truth: np.ndarray, k: int = TOP_K) -> list[float | None]:
    """Per label: the share of its positive cases where it ranks in the case's top k labels."""
    order = np.argsort(-prob, axis=1, kind="stable")[:, :k]
    in_top = np.zeros_like(truth, dtype=bool)
    np.put_along_axis(in_top, order, True, axis=1)
    return [float(in_top[truth[:, j], j].mean()) if truth[:, j].any() else None for j in range(truth.shape[1])]


def _cache_key(bundle: ModelBundle, cases: int, seed: int, missing_rate: float) -> str:
    """Prepared cases depend on the population, the preprocessing config and the code that makes them,
    not on the weights: a retrained model of the same preset reuses them."""
    import training.phantom
    import encoders.preprocess

    digest = hashlib.sha256(repr((cases, seed, missing_rate, bundle.config["xray"]["image_size"],
                                  bundle.config["ecg"]["sample_rate"], bundle.config["ecg"]["seconds"])).encode())
    for package in (training.phantom, encoders.preprocess):
        for source in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(source.read_bytes())
    return f"phantom-{seed}-{cases}-{digest.hexdigest()[:16]}.pt"


def prepared_cases(bundle: ModelBundle, cases: int, seed: int, cache_dir: str | Path | None = None) -> CaseTensors:
    """Phantom population `seed` through the bundle's preprocessors, reused from `cache_dir` when there."""
    from training.phantom_dataset import DEFAULT_MISSING_RATE, phantom_case_tensors

    path = Path(cache_dir) / _cache_key(bundle, cases, seed, DEFAULT_MISSING_RATE) if cache_dir else None
    if path is not None and path.is_file():
        return CaseTensors(**torch.load(path, weights_only=True))
    data = phantom_case_tensors(bundle, cases, seed, missing_rate=DEFAULT_MISSING_RATE)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(asdict(data), tmp)
        tmp.replace(path)
    return data


def collect_margins(bundle: ModelBundle, labelset: LabelSet, data: CaseTensors,
                    modalities: Sequence[str] = ("xray", "ecg", "text")) -> dict[str, Margins]:
    """Prepared cases -> per modality, the margin of every label visible in it and the truth."""
    from training.case_tensors import embed_cases

    bundle.model.text.enable_prefix_cache()
    embeddings = embed_cases(bundle, data, modalities=tuple(modalities))
    out = {}
    for modality in modalities:
        labels = labelset.for_modality(modality)
        rows = torch.nonzero(data.present(modality)).flatten()
        if not labels or len(rows) == 0:
            continue
        with torch.inference_mode():
            positive, negative = label_embeddings(bundle, labels)
            subject = embeddings[modality][rows]
            margins = (subject @ positive.T - subject @ negative.T).double().numpy()
        truth = np.array([[labelset.truth_in(label, data.labels[int(i)], modality) for label in labels]
                          for i in rows], dtype=bool)
        out[modality] = Margins(tuple(label.id for label in labels), margins, truth.reshape(len(rows), len(labels)))
    return out


METHODS = ("stacked", "platt")


def calibrate(bundle: ModelBundle, labelset: LabelSet, margins: dict[str, Margins], *, seed: int,
              holdout: float = DEFAULT_HOLDOUT, l2: float = DEFAULT_L2,
              method: str = "stacked") -> tuple[Calibration, dict[str, Any]]:
    """Fit on a seeded (1 - holdout) share of each modality's cases; report figures on the rest."""
    if not 0.0 < holdout < 1.0:
        raise InvalidInputError("holdout", f"got {holdout}; use a fraction strictly between 0 and 1")
    if method not in METHODS:
        raise InvalidInputError("method", f"got {method!r}; use one of {', '.join(METHODS)}")
    scale = float(bundle.model.scale().detach())
    rng = np.random.default_rng(seed)
    fitted: dict[str, dict[str, PlattMap]] = {}
    summary: dict[str, Any] = {}
    for modality, m in margins.items():
        n = len(m.margins)
        held = np.zeros(n, dtype=bool)
        held[rng.permutation(n)[: int(round(n * holdout))]] = True
        fit_rows, test_rows = ~held, held
        if method == "stacked":
            maps = {label: fit_stacked(m.margins[fit_rows], m.truth[fit_rows, j], m.label_ids, j, l2)
                    for j, label in enumerate(m.label_ids)}
        else:
            maps = {label: fit_platt(m.margins[fit_rows, j], m.truth[fit_rows, j], l2)
                    for j, label in enumerate(m.label_ids)}
        fitted[modality] = maps
        calibration = Calibration(bundle.model_version, {labelset.name: {modality: maps}}, method=method)
        raw = 1.0 / (1.0 + np.exp(-scale * m.margins[test_rows]))
        cal = calibration.apply(m.label_ids, modality, m.margins[test_rows], labelset.name)
        truth = m.truth[test_rows]
        top_raw, top_cal = top_k_rate(raw, truth), top_k_rate(cal, truth)
        summary[modality] = {"fit_cases": int(fit_rows.sum()), "heldout_cases": int(test_rows.sum()), "labels": {
            label: {
                "a": maps[label].a, "b": maps[label].b, "positives": maps[label].positives,
                "negatives": maps[label].negatives, "heldout_positives": int(truth[:, j].sum()),
                "brier": {"before": brier(raw[:, j], truth[:, j]), "after": brier(cal[:, j], truth[:, j])},
                "ece": {"before": ece(raw[:, j], truth[:, j]), "after": ece(cal[:, j], truth[:, j])},
                # Platt maps are monotone: AUROC is the same after; stacked maps read other labels too.
                "auroc": {"before": auroc(truth[:, j], m.margins[test_rows, j]), "after": auroc(truth[:, j], cal[:, j])},
                **({"cross": dict(maps[label].cross)} if maps[label].cross else {}),
                f"top{TOP_K}_rate": {"before": top_raw[j], "after": top_cal[j]},
            }
            for j, label in enumerate(m.label_ids)
        }}
    result = Calibration(bundle.model_version, {labelset.name: fitted}, method=method)
    return result, summary
