"""Per-label calibration of zero-shot margins, stored beside a checkpoint as `calibration.json`.

The CheXzero probability `sigmoid(logit_scale * margin)` puts every label on its own scale: with the
bundled checkpoint some labels saturate near 1 for every case while others sit low even when present,
so probabilities of different labels cannot be ranked against each other. A Platt map per label and
per modality, `p = sigmoid(a * margin + b)` with `a >= 0`, fitted on labelled cases
(`tribind calibrate`, `training/calibrate.py`), puts them on one scale. It is monotone per label, so
per-label AUROC (`tribind eval`) is unchanged by it; only the ranking *across* labels and the
probabilities themselves change.

Method "stacked" (the default of `tribind calibrate` since format 2) adds to each label's map
weights on the margins of the *other* labels of the same set and modality:
`p = sigmoid(a * margin + sum_k w_k * margin_k + b)`, still with `a >= 0`. Why: the tiny model's
margins are correlated where findings look alike (an effusion raises the atelectasis and
consolidation margins too), and a per-label map cannot undo that; a label's probability that also
reads its look-alikes can. A case's probability then depends on the other margins too (it still
rises with the label's own), so per-label AUROC can change: the summary reports it before and
after, on held-out cases.

A calibration belongs to one model_version: a file fitted for other weights is ignored with a warning
(margins of another model mean nothing to it), never applied.

File layout (`FORMAT` 2; format 1 files, Platt maps only, are still read):

    {"format": 2, "method": "stacked", "model_version": "tiny-0123...",
     "fitted_on": {"phantom": {"data": "phantom", "seed": 4242, "cases": 1500, "holdout": 0.3}},
     "label_sets": {"phantom": {"xray": {"cardiomegaly": {"a": 31.2, "b": -2.1, "positives": 310,
                                                           "negatives": 740,
                                                           "cross": {"pulmonary_edema": -3.4, ...}}, ...},
                                "ecg": {...}}}}
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import InvalidInputError

log = logging.getLogger("tribind.calibration")

CALIBRATION_FILE = "calibration.json"
FORMAT = 2
READABLE = {1: ("platt",), 2: ("platt", "stacked")}
MODALITIES = ("xray", "ecg", "text")


@dataclass(frozen=True)
class PlattMap:
    """p = sigmoid(a * margin + sum_k cross[k] * margin_k + b); margin = cos(positive ensemble) -
    cos(negative ensemble); margin_k: the margins of other labels of the same set and modality."""

    a: float
    b: float
    positives: int
    negatives: int
    cross: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and math.isfinite(self.b) and all(map(math.isfinite, self.cross.values()))):
            raise InvalidInputError("calibration", f"a={self.a}, b={self.b} must be finite numbers; refit with "
                                                   "`tribind calibrate`")
        # A negative slope would reverse the label's own ranking of cases: refuse rather than apply it.
        if self.a < 0:
            raise InvalidInputError("calibration", f"slope a={self.a} is negative; a calibration must be monotone "
                                                   "increasing, refit with `tribind calibrate`")

    def to_json(self) -> dict[str, Any]:
        out = {"a": self.a, "b": self.b, "positives": self.positives, "negatives": self.negatives}
        if self.cross:
            out["cross"] = dict(self.cross)
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| neither overflows exp nor rounds 1 - p to exactly 0 needlessly.
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


@dataclass
class Calibration:
    model_version: str
    label_sets: dict[str, dict[str, dict[str, PlattMap]]] = field(default_factory=dict)  # set -> modality -> label
    method: str = "platt"
    fitted_on: dict[str, Any] = field(default_factory=dict)  # label set -> what it was fitted on

    # -- reading ----------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Calibration":
        if data.get("method") not in READABLE.get(data.get("format"), ()):
            raise InvalidInputError("calibration", f"format {data.get('format')!r} / method {data.get('method')!r} "
                                                   f"is not one this version reads ({READABLE}); refit with "
                                                   "`tribind calibrate`")
        try:
            sets = {
                str(name): {str(m): {str(label): PlattMap(float(p["a"]), float(p["b"]), int(p["positives"]),
                                                          int(p["negatives"]),
                                                          {str(k): float(w) for k, w in (p.get("cross") or {}).items()})
                                     for label, p in labels.items()}
                            for m, labels in modalities.items()}
                for name, modalities in data["label_sets"].items()
            }
            version = str(data["model_version"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError("calibration", f"malformed file ({exc!r}); refit with `tribind calibrate`") from None
        return cls(model_version=version, label_sets=sets, method=str(data["method"]),
                   fitted_on=dict(data.get("fitted_on") or {}))

    @classmethod
    def load(cls, checkpoint_dir: str | Path, model_version: str | None = None) -> "Calibration | None":
        """The calibration stored in `checkpoint_dir` ("default" = the bundled checkpoint), or None.

        None when there is no file, when it cannot be read, or when it was fitted for another
        model_version than `model_version` (default: the directory's model_version.txt); the last two
        are logged as warnings, since a server then silently falls back to uncalibrated probabilities.
        """
        from encoders.checkpoint import DEFAULT_CHECKPOINT, VERSION_FILE

        directory = DEFAULT_CHECKPOINT if str(checkpoint_dir) == "default" else Path(checkpoint_dir)
        path = directory / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            calibration = cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, InvalidInputError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return None
        if model_version is None:
            version_file = directory / VERSION_FILE
            model_version = version_file.read_text().strip() if version_file.is_file() else None
        if calibration.model_version != model_version:
            log.warning("ignoring %s: fitted for model_version %s, the checkpoint is %s; run `tribind calibrate "
                        "--checkpoint %s` to refit", path, calibration.model_version, model_version, checkpoint_dir)
            return None
        return calibration

    # -- applying ---------------------------------------------------------------------------------

    def covers(self, label_set: str, modality: str, label_ids: Sequence[str]) -> bool:
        """True when every label of `label_ids` has a map for this label set and modality, and every
        label those maps read (stacked) is among `label_ids`."""
        fitted = self.label_sets.get(label_set, {}).get(modality, {})
        given = set(label_ids)
        return bool(label_ids) and all(label in fitted and given.issuperset(fitted[label].cross)
                                       for label in label_ids)

    def apply(self, label_ids: Sequence[str], modality: str, margins: np.ndarray,
              label_set: str | None = None) -> np.ndarray:
        """Margins [..., K] (K = len(label_ids), in that order) -> calibrated probabilities, same shape.

        `label_set` may be left out when the file holds a single label set.
        """
        name = self._label_set_name(label_set)
        if modality not in MODALITIES:
            raise InvalidInputError("modality", f"{modality!r}; use one of {', '.join(MODALITIES)}")
        margins = np.asarray(margins, dtype=np.float64)
        if margins.ndim == 0 or margins.shape[-1] != len(label_ids):
            raise InvalidInputError("margins", f"shape {margins.shape} does not end in {len(label_ids)} "
                                               "(one margin per label id)")
        fitted = self.label_sets[name].get(modality, {})
        missing = [label for label in label_ids if label not in fitted]
        if missing:
            raise InvalidInputError("label_ids", f"{', '.join(missing)} not calibrated for {modality} in label set "
                                                 f"{name!r}; refit with `tribind calibrate --label-set {name}`")
        column = {label: k for k, label in enumerate(label_ids)}
        unread = sorted({other for label in label_ids for other in fitted[label].cross if other not in column})
        if unread:
            raise InvalidInputError("label_ids", f"the {modality} maps of label set {name!r} also read the margins of "
                                                 f"{', '.join(unread)}; pass every label of the set visible in {modality}")
        # [K, K] weights: row j = label j's map over all margins (its own slope on the diagonal).
        weights = np.zeros((len(label_ids), len(label_ids)))
        for j, label in enumerate(label_ids):
            weights[j, j] = fitted[label].a
            for other, w in fitted[label].cross.items():
                weights[j, column[other]] += w
        b = np.array([fitted[label].b for label in label_ids])
        return _sigmoid(margins @ weights.T + b)

    def _label_set_name(self, label_set: str | None) -> str:
        if label_set is None:
            if len(self.label_sets) != 1:
                raise InvalidInputError("label_set", f"this calibration holds {sorted(self.label_sets)}; name one")
            return next(iter(self.label_sets))
        if label_set not in self.label_sets:
            raise InvalidInputError("label_set", f"{label_set!r} is not calibrated (have {sorted(self.label_sets)}); "
                                                 f"run `tribind calibrate --label-set {label_set}`")
        return label_set

    # -- writing ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        stacked = any(p.cross for modalities in self.label_sets.values() for labels in modalities.values()
                      for p in labels.values())
        return {
            "format": FORMAT, "method": "stacked" if stacked else "platt", "model_version": self.model_version,
            "fitted_on": self.fitted_on,
            "label_sets": {name: {m: {label: p.to_json() for label, p in labels.items()}
                                  for m, labels in modalities.items()}
                           for name, modalities in self.label_sets.items()},
        }

    def save(self, checkpoint_dir: str | Path) -> Path:
        """Write `calibration.json` into the checkpoint directory (atomically: a server may be reading it)."""
        from encoders.checkpoint import resolve_checkpoint

        path = resolve_checkpoint(checkpoint_dir) / CALIBRATION_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path
