"""Label sets for zero-shot labelling: per label, the modality it shows in and prompt ensembles.

A label set is a JSON file here (`phantom`, `chexpert14`, `nih14`, `ptbxl_super`, `ptbxl_statements`)
or anywhere else given by path. Label ids are the source's own vocabulary (phantom ids, NIH 'Finding
Labels', CheXpert columns, PTB-XL SCP codes and superclasses), so a reader's labels join without a map.
Each label has positive and negative prompt ensembles (CheXzero: a label's score is the softmax of
the positive versus the negative prompt similarity). `modality` is "xray", "ecg" or "both".

A label with `"no_finding": true` (the phantom's "normal") means "none of the other labels". Read off
one modality its truth is "none of the labels that modality shows" (`truth_in`): a clear film of a
patient in atrial fibrillation is a normal film. Scored against case-level truth instead, a film's
"normal" could never be learnt or calibrated: half of its positives hinge on the ECG.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from encoders.errors import InvalidInputError

LABELSET_DIR = Path(__file__).resolve().parent
_MODALITIES = ("xray", "ecg", "both")


@dataclass(frozen=True)
class Label:
    id: str
    modality: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    description: str = ""
    no_finding: bool = False

    def applies_to(self, modality: str) -> bool:
        """True when the label can be read off `modality` ("text" reads every label)."""
        return modality == "text" or self.modality in (modality, "both")


@dataclass(frozen=True)
class LabelSet:
    name: str
    description: str
    labels: tuple[Label, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.labels)

    def for_modality(self, modality: str, include_both: bool = True) -> tuple[Label, ...]:
        """The labels visible in `modality`; `include_both=False` leaves out "both" labels such as normal."""
        return tuple(label for label in self.labels
                     if label.applies_to(modality) and (include_both or label.modality != "both"))

    def truth_in(self, label: Label, case_labels: Collection[str], modality: str) -> bool:
        """Is `label` true of a case as seen in `modality`? A no-finding label: none of the labels that
        `modality` shows is on the case; any other label: it is on the case."""
        if not label.no_finding:
            return label.id in case_labels
        return not any(other.id in case_labels for other in self.for_modality(modality) if not other.no_finding)

    def matching(self, name: str) -> tuple[Label, ...]:
        """The labels `name` names, forgiving about spelling: the id itself (any case, spaces or hyphens
        for underscores), else every id it is the start of ("pleural effusion" -> pleural_effusion_left,
        pleural_effusion_right). Empty when it names none (an empty name names none)."""
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        if not key:
            return ()
        exact = tuple(label for label in self.labels if label.id.lower() == key)
        return exact or tuple(label for label in self.labels if label.id.lower().startswith(key))

    def get(self, label_id: str) -> Label:
        for label in self.labels:
            if label.id == label_id:
                return label
        raise InvalidInputError("label", f"{label_id!r} is not in label set {self.name!r}; valid: {', '.join(self.ids)}")


def list_labelsets() -> list[str]:
    return sorted(p.stem for p in LABELSET_DIR.glob("*.json"))


def load_labelset(name_or_path: str | Path) -> LabelSet:
    """A registered label set name, or a path to a label-set JSON file of the same format."""
    text = str(name_or_path)
    path = LABELSET_DIR / f"{text}.json" if text in list_labelsets() else Path(text)
    if not path.is_file():
        raise InvalidInputError("labelset", f"unknown label set {text!r}; valid: {', '.join(list_labelsets())} "
                                "(or a path to a label-set .json)")
    data = json.loads(path.read_text())
    labels = []
    for i, item in enumerate(data.get("labels", [])):
        where = f"labels[{i}]"
        if item.get("modality") not in _MODALITIES:
            raise InvalidInputError(f"{where}.modality", f"must be one of {', '.join(_MODALITIES)}")
        if not item.get("positive") or not item.get("negative"):
            raise InvalidInputError(where, "needs non-empty 'positive' and 'negative' prompt lists")
        labels.append(Label(id=str(item["id"]), modality=item["modality"], positive=tuple(item["positive"]),
                            negative=tuple(item["negative"]), description=item.get("description", ""),
                            no_finding=bool(item.get("no_finding", False))))
    if not labels:
        raise InvalidInputError("labelset", f"{path} has no labels")
    return LabelSet(name=data.get("name", path.stem), description=data.get("description", ""), labels=tuple(labels))
