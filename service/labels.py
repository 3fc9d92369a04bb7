"""Zero-shot labelling for Classify and ListLabelSets, through `encoders.labelsets` and `encoders.zero_shot`.

The prompt ensembles of a built-in label set are embedded once per server (the first Classify with
that set pays ~1 text forward pass per prompt) and cached; custom labels are embedded per request.
A subject only gets the labels visible in its modality: an ECG is not asked about pleural effusion.

When the served checkpoint has a `calibration.json` fitted for its model_version (`tribind calibrate`)
covering a built-in label set and the subject's modality, `probability` is the calibrated one and the
labels are ranked by it: raw CheXzero probabilities sit on a different scale per label and cannot be
ranked against each other. Custom labels and uncovered sets keep the raw probability.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from encoders.calibration import Calibration
from encoders.errors import InvalidInputError
from encoders.labelsets import Label, LabelSet, list_labelsets, load_labelset
from encoders.zero_shot import label_embeddings, zero_shot_probabilities
from protos.tribind.v1 import tribind_pb2 as pb
from service.convert import MODALITY_TO_PB
from service.encoding import ServedModel
from service.errors import exhausted, invalid

MAX_CUSTOM_LABELS = 64
MAX_PROMPTS_PER_LABEL = 16
MAX_PROMPT_CHARS = 1000


@dataclass
class ScoredLabel:
    label: str
    score: float         # cosine(subject, positive ensemble) - cosine(subject, negative ensemble)
    probability: float   # calibrated when the checkpoint has a calibration for the set and modality, else
                         # sigmoid(logit_scale * score): the CheXzero positive-vs-negative softmax


class LabelScorer:
    def __init__(self, model: ServedModel) -> None:
        self._model = model
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._sets: dict[str, LabelSet] = {}
        self._lock = threading.Lock()
        checkpoint = getattr(model.bundle, "checkpoint", None)
        self.calibration: Calibration | None = (
            Calibration.load(checkpoint, model.model_version) if checkpoint is not None else None)

    def names(self) -> list[str]:
        return list_labelsets()

    def builtin(self, name: str) -> LabelSet:
        # Only registered names: a label-set path from a client would let it read server files.
        if name not in self.names():
            raise invalid("label_set", f"unknown label set {name!r}; use one of {', '.join(self.names())} "
                                       "(ListLabelSets) or send custom labels")
        with self._lock:
            if name not in self._sets:
                self._sets[name] = load_labelset(name)
            return self._sets[name]

    def custom(self, custom: pb.CustomLabels) -> LabelSet:
        if not custom.labels:
            raise invalid("custom.labels", "is empty; give at least one label")
        if len(custom.labels) > MAX_CUSTOM_LABELS:
            raise exhausted(f"custom.labels: {len(custom.labels)} labels exceed the limit of {MAX_CUSTOM_LABELS}")
        labels, seen = [], set()
        for i, entry in enumerate(custom.labels):
            field = f"custom.labels[{i}]"
            name = entry.name.strip()
            if not name:
                raise invalid(f"{field}.name", "is empty; name every label")
            if name in seen:
                raise invalid(f"{field}.name", f"{name!r} appears twice; give each label once")
            seen.add(name)
            for part in ("prompts", "negative_prompts"):
                prompts = list(getattr(entry, part))
                if len(prompts) > MAX_PROMPTS_PER_LABEL:
                    raise exhausted(f"{field}.{part}: more than {MAX_PROMPTS_PER_LABEL} prompts")
                for j, prompt in enumerate(prompts):
                    if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
                        raise invalid(f"{field}.{part}[{j}]", f"must be 1..{MAX_PROMPT_CHARS} characters of text")
            positive = tuple(entry.prompts) or (name,)
            negative = tuple(entry.negative_prompts) or (f"no {name}",)
            labels.append(Label(id=name, modality="both", positive=positive, negative=negative))
        return LabelSet(name="custom", description="labels given in the request", labels=tuple(labels))

    def score(self, label_set: LabelSet, vector: np.ndarray, modality: str) -> list[ScoredLabel]:
        """Labels of `label_set` visible in `modality`, best first."""
        labels = label_set.for_modality(modality)
        if not labels:
            raise invalid("label_set", f"{label_set.name!r} has no label that can be read off {modality}; "
                                       "choose a label set for this modality")
        positive, negative = self._prompt_embeddings(label_set, labels)
        subject = torch.from_numpy(np.asarray(vector, dtype=np.float32)).unsqueeze(0)
        with torch.inference_mode():
            probs = zero_shot_probabilities(subject, positive, negative, self._model.bundle.model.scale())[0]
            margin = (subject @ positive.T - subject @ negative.T)[0]
        ids = [label.id for label in labels]
        if self._calibrated(label_set, modality, ids):
            assert self.calibration is not None
            probs = self.calibration.apply(ids, modality, margin.double().numpy(), label_set.name)
        scored = [ScoredLabel(label.id, float(m), float(p)) for label, m, p in zip(labels, margin, probs)]
        return sorted(scored, key=lambda s: (-s.probability, s.label))

    def contrast_vectors(self, label_set: LabelSet, modality: str) -> dict[str, torch.Tensor]:
        """label id -> positive minus negative ensemble [D], for the labels `score` returns for `modality`.

        The very tensors `score` takes its margins from, so an explanation against one of these explains
        LabelScore.score itself (custom labels included), not a recomputed approximation of it.
        """
        labels = label_set.for_modality(modality)
        positive, negative = self._prompt_embeddings(label_set, labels)
        return {label.id: (positive[i] - negative[i]).detach() for i, label in enumerate(labels)}

    def _calibrated(self, label_set: LabelSet, modality: str, ids: list[str]) -> bool:
        # Only the registered set object: a custom set may reuse a built-in name and its label ids.
        builtin = self._sets.get(label_set.name) is label_set
        return builtin and self.calibration is not None and self.calibration.covers(label_set.name, modality, ids)

    def _prompt_embeddings(self, label_set: LabelSet, labels: tuple[Label, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        key = f"{label_set.name}:{','.join(label.id for label in labels)}"
        cacheable = label_set.name in self._sets and self._sets[label_set.name] is label_set
        if cacheable and key in self._cache:
            return self._cache[key]
        try:
            with torch.inference_mode():
                pos, neg = label_embeddings(self._model.bundle, labels)
        except InvalidInputError as exc:
            raise invalid("labels", exc.reason) from None
        if cacheable:
            self._cache[key] = (pos, neg)
        return pos, neg

    def describe_all(self) -> list[pb.LabelSet]:
        out = []
        for name in self.names():
            label_set = self.builtin(name)
            modalities = set()
            for label in label_set.labels:
                modalities.update(("xray", "ecg") if label.modality == "both" else (label.modality,))
            out.append(pb.LabelSet(
                name=name, description=label_set.description, labels=list(label_set.ids),
                modalities=[MODALITY_TO_PB[m] for m in ("xray", "ecg") if m in modalities],
            ))
        return out
