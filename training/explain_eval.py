"""`tribind eval-explain`: are the explanations faithful? Measured on phantom cases whose truth is known.

For every positive (case, finding) pair the item is explained against the finding's label target
(its positive prompt ensemble, the score being their cosine; with `contrast`, positive minus negative
ensemble, the zero-shot logit over the temperature), then:

- Pointing game (Zhang et al. 2016), at the resolution the explanation has: one token cell, one time
  window. X-ray (`pointing.xray`): a hit when the most relevant token's cell holds part of the
  finding's pixel mask; the random baseline is the share of cells that do. A cell is the pixels
  nearest the token's centre, where the stem makes the token look (`XrayEncoder.token_geometry`):
  the nominal patch for a patch convolution, half a patch up and left of it for the conv stem
  (scored on the nominal patches until session 14). ECG (`pointing.ecg`): a hit when the most
  relevant time window of the lead-summed map (one window = one token,
  `patch_samples / sample_rate` s) overlaps one of the finding's intervals; the random baseline is the
  share of windows that do. Why patch and window, not pixel and sample: the map has one value per
  patch, so asking whether a pixel inside that patch is a finding pixel scores where the grid happens
  to fall, not the explanation (the original game allows 15 px of tolerance for the same reason).
  Two stricter games are reported beside them: `xray_centre` (a hit when the patch's centre pixel is
  inside the mask; baseline the mask's area share) and `ecg_lead_window` (the most relevant lead x
  window cell, a hit when its window overlaps an interval AND its lead is one where the finding shows,
  an empty lead list meaning every lead; baseline the share of recorded cells that are hits).
  Conditions whose baseline is 1 (rate changes: the whole record) cannot miss; they are reported with
  `"trivial": true` and kept out of the macro mean.
- Deletion (Petsiuk et al. 2018, RISE): the most relevant token cells (X-ray; replaced by the same cell
  of the population's mean film, so a fully deleted film is the average chest film rather than a
  flat grey square, which the model reads as an opacity) or time windows (ECG; all leads set to
  0 mV, the isoelectric line after baseline removal) are removed first, in `steps` equal steps, and the cosine to the target is recorded. With s_k the score
  after step k (s_K: everything removed, the same image for every order):
  auc = mean_pairs(trapz(s_k - s_K)) / mean_pairs(s_0 - s_K) on k/K in [0, 1], for relevance order and
  for random orders (`random_orders` of them); ratio = auc / random_auc (lower = more faithful). Both
  can go below 0: when taking out the most relevant regions drops the score under the fully deleted
  input's, the curve runs below s_K (seen with the tiny preset's X-ray maps at some seeds). The same
  three figures per finding are under `per_label`.
  The pooled figures leave out the pairs whose truth covers the whole input (the pointing game's
  `trivial` rule, random baseline 1: the rate findings, read from every window of the record), and
  `all_pairs` gives them with those pairs in. Why: a rate belongs to the whole record, and zeroing
  windows changes it (the beats go, and the rate with them), so there the curve measures what deletion
  does to the rhythm more than the order the map gives; where every window carries the finding, a
  faithful map has no region to rank first. Pooled in, such pairs move the ratio with how many of
  them a seed draws (README, Session 17: runs s14d and s15b read 0.64-0.98 on them, or no figure
  for s14d's bradycardia, whose score does not fall when its windows go).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from encoders.errors import InvalidInputError
from encoders.explain import (
    METHODS, Item, ecg_item, explain, explain_batch, label_target, text_item, xray_item,
)

_BATCH = 32
# A truth that covers more than this share of the cells is the whole input (rate findings: 1.0).
_WHOLE_INPUT = 0.999


def _mask_on_input(mask: np.ndarray, size: int) -> np.ndarray:
    """A square film's bool mask at the model's input size (the same resize the film gets)."""
    if mask.shape == (size, size):
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)
    return np.asarray(image) >= 128


def _auc(curves: np.ndarray) -> float | None:
    """curves [n, K+1] -> the normalised area described in the module docstring; None when removing
    everything does not lower the score on average (nothing to delete: the model ignores the target)."""
    excess = curves - curves[:, -1:]
    x = np.linspace(0.0, 1.0, curves.shape[1])
    drop = float(excess[:, 0].mean())
    return float(np.trapezoid(excess, x, axis=1).mean() / drop) if drop > 1e-9 else None


@torch.no_grad()
def _scores(bundle, modality: str, tensors: torch.Tensor, lead_mask: torch.Tensor | None,
            targets: torch.Tensor) -> torch.Tensor:
    model = bundle.model
    out = []
    for start in range(0, len(tensors), 256):
        part = slice(start, start + 256)
        if modality == "xray":
            z = model.encode_xray(tensors[part])
        else:
            z = model.encode_ecg(tensors[part], lead_mask[part])
        out.append((z * targets[part]).sum(-1))
    return torch.cat(out)


def _token_cells(xray) -> tuple[np.ndarray, np.ndarray]:
    """([S] token of each pixel row / column, [g] centre pixel of each token): the regions the patch
    grid refers to, where the stem makes each token look (`XrayEncoder.token_geometry`)."""
    origin, stride = xray.token_geometry()
    grid = xray.vit.grid_size[0]
    centres = np.clip(np.floor(origin + stride * np.arange(grid) + 0.5), 0, xray.image_size - 1).astype(np.int64)
    return xray.pixel_tokens(), centres


def _deletion_curves(bundle, modality: str, items: Sequence[Item], explanations, targets: torch.Tensor,
                     steps: int, random_orders: int, rng: np.random.Generator,
                     mean_film: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(relevance-order curves [n, steps+1], random-order curves [n * random_orders, steps+1])."""
    inputs, masks, rows, orders_kind = [], [], [], []
    patch = bundle.model.ecg.patch
    grid_w = bundle.model.xray.vit.grid_size[1]
    cells = bundle.model.xray.pixel_tokens()
    # Token t removes the pixels of its cell: rows and columns [first[t], last[t]).
    first = np.searchsorted(cells, np.arange(grid_w))
    last = np.searchsorted(cells, np.arange(grid_w), side="right")
    for i, (item, explanation) in enumerate(zip(items, explanations)):
        units = explanation.relevance.size if modality == "xray" else explanation.heatmap.size
        ranked = np.argsort(-(explanation.relevance.ravel() if modality == "xray" else explanation.heatmap),
                            kind="stable")
        orders = [ranked] + [rng.permutation(units) for _ in range(random_orders)]
        for kind, order in enumerate(orders):
            for k in range(steps + 1):
                removed = order[: int(round(k / steps * units))]
                if modality == "xray":
                    pixels = item.tensors["pixels"].clone()
                    fill = mean_film if mean_film is not None else torch.full_like(pixels, float(pixels.mean()))
                    for unit in removed:
                        r, c = divmod(int(unit), grid_w)
                        window = (slice(None), slice(first[r], last[r]), slice(first[c], last[c]))
                        pixels[window] = fill[window]
                    inputs.append(pixels)
                else:
                    signals = item.tensors["signals"].clone()
                    for unit in removed:
                        signals[:, int(unit) * patch:(int(unit) + 1) * patch] = 0.0
                    inputs.append(signals)
                    masks.append(item.tensors["lead_mask"])
                rows.append(i)
                orders_kind.append(kind)
    tensors = torch.stack(inputs).float()
    lead_mask = torch.stack(masks) if masks else None
    scores = _scores(bundle, modality, tensors, lead_mask, targets[rows]).numpy().reshape(-1, steps + 1)
    per_item = scores.reshape(len(items), random_orders + 1, steps + 1)
    return per_item[:, 0], per_item[:, 1:].reshape(-1, steps + 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ecg_cells(mask: dict, lead_names: Sequence[str], windows: int, window_s: float, offset_s: float) -> np.ndarray:
    """bool [12, W]: cells (lead, window) where the finding shows."""
    starts = offset_s + np.arange(windows) * window_s
    ends = starts + window_s
    in_time = np.zeros(windows, dtype=bool)
    for a, b in mask["intervals_s"]:
        in_time |= (np.maximum(starts, a) < np.minimum(ends, b))
    leads = set(mask.get("leads") or lead_names)
    in_lead = np.array([name in leads for name in lead_names])
    return in_lead[:, None] & in_time[None, :]


def _summarise(hits: dict[str, list[bool]], baselines: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    informative_hits, informative_random = [], []
    for label in sorted(hits):
        rate, random = float(np.mean(hits[label])), float(np.mean(baselines[label]))
        trivial = random > _WHOLE_INPUT
        out[label] = {"hit_rate": round(rate, 4), "random": round(random, 4), "n": len(hits[label]),
                      **({"trivial": True} if trivial else {})}
        if not trivial:
            informative_hits.append(rate)
            informative_random.append(random)
    out["macro"] = round(float(np.mean(informative_hits)), 4) if informative_hits else None
    out["random_macro"] = round(float(np.mean(informative_random)), 4) if informative_random else None
    return out


def _timing(bundle, items: dict[str, list[Item]], target, method: str, repeats: int = 5) -> dict[str, float]:
    """Median wall seconds of one single-item explanation per modality (the service's unit of work)."""
    out = {}
    for modality, pool in items.items():
        times = []
        for item in pool[:repeats]:
            started = time.perf_counter()
            explain(bundle, item, target, method)
            times.append(time.perf_counter() - started)
        if times:
            out[modality] = round(float(np.median(times)), 4)
    return out


def _pairs(bundle, population) -> tuple[list, list]:
    """Positive (item, finding, truth) pairs: X-ray with the mask on the model input, ECG with its intervals."""
    from training.phantom.labels import ECG_FINDINGS, XRAY_FINDINGS

    size = int(bundle.config["xray"]["image_size"])
    xray_pairs, ecg_pairs = [], []
    for case in population:
        if case.xray is not None:
            item = None
            for label in case.labels:
                mask = case.xray_masks.get(label)
                if label in XRAY_FINDINGS and mask is not None and mask.any():
                    item = item or xray_item(bundle, case.xray, case.case_id)
                    xray_pairs.append((item, label, _mask_on_input(mask, size)))
        if case.ecg is not None:
            item = None
            for label in case.labels:
                if label in ECG_FINDINGS and label in case.ecg_masks:
                    item = item or ecg_item(bundle, case.ecg, float(case.ecg_fs), list(case.lead_names),
                                            case.case_id)
                    ecg_pairs.append((item, label, case.ecg_masks[label]))
    return xray_pairs, ecg_pairs


class _Tally:
    """Pointing hits and baselines per label, and deletion curves, of one modality."""

    def __init__(self) -> None:
        self.hits: dict[str, list[bool]] = {}
        self.baselines: dict[str, list[float]] = {}
        self.cell_hits: dict[str, list[bool]] = {}
        self.cell_baselines: dict[str, list[float]] = {}
        self.centre_hits: dict[str, list[bool]] = {}
        self.centre_baselines: dict[str, list[float]] = {}
        self.curves: list[np.ndarray] = []
        self.random_curves: list[np.ndarray] = []
        self.labels: list[str] = []    # the label of each row of `curves`, in order
        self.whole_input: list[bool] = []  # per row of `curves`: the truth covers every cell (baseline 1)

    def point_xray(self, label: str, mask: np.ndarray, grid: np.ndarray, cells: np.ndarray,
                   centres: np.ndarray) -> None:
        """`cells` [S]: each pixel row's (column's) token; `centres` [g]: each token's centre pixel."""
        r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
        touched = np.zeros(grid.shape, dtype=bool)  # the token cells the mask reaches
        np.logical_or.at(touched, (cells[:, None], cells[None, :]), mask)
        self.hits.setdefault(label, []).append(bool(touched[r, c]))
        self.baselines.setdefault(label, []).append(float(touched.mean()))
        self.whole_input.append(bool(touched.mean() > _WHOLE_INPUT))
        self.centre_hits.setdefault(label, []).append(bool(mask[centres[r], centres[c]]))
        self.centre_baselines.setdefault(label, []).append(float(mask.mean()))

    def point_ecg(self, label: str, truth: dict, explanation, present: np.ndarray) -> None:
        cells = _ecg_cells(truth, explanation.lead_names, explanation.relevance.shape[1], explanation.window_s,
                           explanation.time_offset_s)
        in_time = cells.any(axis=0)
        self.hits.setdefault(label, []).append(bool(in_time[int(np.argmax(explanation.heatmap))]))
        self.baselines.setdefault(label, []).append(float(in_time.mean()))
        self.whole_input.append(bool(in_time.mean() > _WHOLE_INPUT))
        lead, window = np.unravel_index(int(np.argmax(explanation.relevance)), cells.shape)
        self.cell_hits.setdefault(label, []).append(bool(cells[lead, window]))
        self.cell_baselines.setdefault(label, []).append(float(cells[present].mean()))

    def deletion(self, steps: int, random_orders: int) -> dict[str, Any]:
        ours, theirs = np.concatenate(self.curves), np.concatenate(self.random_curves)
        labels, whole = np.array(self.labels), np.array(self.whole_input, dtype=bool)
        if len(whole) != len(labels):
            raise RuntimeError(f"{len(whole)} pointing records for {len(labels)} deletion curves: "
                               "point every pair before adding its curves")

        def pooled(rows: np.ndarray) -> dict[str, Any]:
            # theirs holds `random_orders` rows per pair, pair-major (see _deletion_curves).
            return {**_ratio(ours[rows], theirs[np.repeat(rows, random_orders)]), "pairs": int(rows.sum())}

        per_label = {}
        for label in sorted(set(self.labels)):
            mine = labels == label
            per_label[label] = {**pooled(mine), **({"whole_input": True} if whole[mine].all() else {})}
        local = ~whole
        shown_ours, shown_theirs = ours[local], theirs[np.repeat(local, random_orders)]
        return {**pooled(local),
                "whole_input_pairs": int(whole.sum()),
                "all_pairs": pooled(np.ones(len(labels), dtype=bool)),
                "score_before": _mean(shown_ours[:, 0]),
                "score_all_removed": _mean(shown_ours[:, -1]),
                # The mean score after each step: the curves behind the two areas, for plotting and sanity.
                "curve": [round(float(v), 4) for v in shown_ours.mean(axis=0)] if len(shown_ours) else [],
                "random_curve": [round(float(v), 4) for v in shown_theirs.mean(axis=0)] if len(shown_theirs) else [],
                "steps": steps, "random_orders": random_orders,
                # Why per label: a pooled ratio mixes findings that show a faithful order with findings
                # that cannot. A finding repeated in every beat stays while any beat does.
                "per_label": per_label}


def _mean(values: np.ndarray) -> float | None:
    return _round(float(values.mean())) if len(values) else None


def _ratio(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    """auc, random_auc and ratio of relevance-order curves `ours` against random-order curves `theirs`."""
    if not len(ours) or not len(theirs):
        return {"auc": None, "random_auc": None, "ratio": None}
    auc, random_auc = _auc(ours), _auc(theirs)
    defined = auc is not None and random_auc is not None and random_auc > 0
    return {"auc": _round(auc), "random_auc": _round(random_auc),
            "ratio": round(auc / random_auc, 4) if defined else None}


def _measure(bundle, pairs_by_modality: dict[str, list], targets: dict[str, torch.Tensor], method: str, steps: int,
             random_orders: int, seed: int) -> dict[str, Any]:
    """Pointing and deletion figures of one model on prepared pairs."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"pointing": {}, "deletion": {}}
    films = {id(item): item.tensors["pixels"] for item, _, _ in pairs_by_modality.get("xray", [])}
    mean_film = torch.stack(list(films.values())).float().mean(dim=0) if films else None
    for modality, pairs in pairs_by_modality.items():
        if not pairs:
            continue
        tally = _Tally()
        if modality == "xray":
            cells, centres = _token_cells(bundle.model.xray)
        for start in range(0, len(pairs), _BATCH):
            chunk = pairs[start:start + _BATCH]
            items = [item for item, _, _ in chunk]
            chunk_targets = torch.stack([targets[label] for _, label, _ in chunk])
            explanations = explain_batch(bundle, items, chunk_targets, method)
            for (item, label, truth), explanation in zip(chunk, explanations):
                if modality == "xray":
                    tally.point_xray(label, truth, explanation.relevance, cells, centres)
                else:
                    tally.point_ecg(label, truth, explanation, item.tensors["lead_mask"].numpy())
            ours, theirs = _deletion_curves(bundle, modality, items, explanations, chunk_targets, steps,
                                            random_orders, rng, mean_film)
            tally.curves.append(ours)
            tally.random_curves.append(theirs)
            tally.labels.extend(label for _, label, _ in chunk)
        out["pointing"][modality] = _summarise(tally.hits, tally.baselines)
        if modality == "xray":
            out["pointing"]["xray_centre"] = _summarise(tally.centre_hits, tally.centre_baselines)
        else:
            out["pointing"]["ecg_lead_window"] = _summarise(tally.cell_hits, tally.cell_baselines)
        out["deletion"][modality] = tally.deletion(steps, random_orders)
    return out


def _label_targets(bundle, contrast: bool) -> dict[str, torch.Tensor]:
    from training.phantom.labels import ECG_FINDINGS, XRAY_FINDINGS

    return {label: label_target(bundle, label, contrast=contrast).embedding
            for label in (*XRAY_FINDINGS, *ECG_FINDINGS)}


def evaluate_explanations(bundle, cases: int = 300, seed: int = 777, method: str = "chefer", steps: int = 8,
                          random_orders: int = 3, missing_rate: float = 0.15, contrast: bool = False,
                          random_init: bool = False, workers: int | None = None) -> dict[str, Any]:
    """The `tribind eval-explain --data phantom --json` object (see the module docstring).

    `random_init` adds the same figures for an untrained model of the same preset: how much of a score
    comes from the data's structure (e.g. ECG findings that sit on the QRS, where the signal is large)
    rather than from what the model learned.
    """
    from encoders.explain import Target
    from training.phantom import generate_cases

    if method not in METHODS:
        raise InvalidInputError("method", f"must be one of {', '.join(METHODS)}, got {method!r}")
    if cases < 1 or steps < 1 or random_orders < 1:
        raise InvalidInputError("cases", "cases, steps and random_orders must be at least 1")
    started = time.time()
    size = int(bundle.config["xray"]["image_size"])
    population = generate_cases(cases, seed, xray_size=max(64, size), missing_rate=missing_rate,
                                workers=workers if workers is not None else min(2, os.cpu_count() or 1))
    xray_pairs, ecg_pairs = _pairs(bundle, population)
    pairs = {"xray": xray_pairs, "ecg": ecg_pairs}
    targets = _label_targets(bundle, contrast)
    result: dict[str, Any] = {"method": method, "target": "contrast" if contrast else "positive",
                              "model_version": bundle.model_version, "seed": seed, "cases": cases,
                              **_measure(bundle, pairs, targets, method, steps, random_orders, seed)}
    timing_items = {"xray": [p[0] for p in xray_pairs[:5]], "ecg": [p[0] for p in ecg_pairs[:5]],
                    "text": [text_item(c.report, c.case_id) for c in population if c.report][:5]}
    timing_target = Target("label", "timing", next(iter(targets.values())))
    result["seconds_per_explanation"] = _timing(bundle, timing_items, timing_target, method)
    if random_init:
        from training.evaluate import random_init_like

        fresh = random_init_like(bundle, seed)
        result["random_init"] = _measure(fresh, pairs, _label_targets(fresh, contrast), method, steps,
                                         random_orders, seed)
    result["threads"] = torch.get_num_threads()
    result["seconds"] = round(time.time() - started, 1)
    return result
