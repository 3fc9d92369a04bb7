"""The 14 CheXpert observations (Irvin et al., AAAI 2019), shared by the CheXpert and MIMIC-CXR-JPG tables.

Cell values: 1 positive, 0 negative (mentioned as absent), -1 uncertain, blank (not mentioned).
Policy (option `uncertain`):
- blank -> negative: the labeller found no mention, the usual reading for a report;
- 1 -> positive, 0 -> negative;
- -1 -> `zeros` (default, U-Zeros: uncertain counts as absent), `ones` (U-Ones: as present) or
  `paper` (the CheXpert paper's best per-finding choice: U-Ones for Atelectasis and Edema, U-Zeros
  otherwise). Uncertain findings are always listed in metadata `uncertain_labels`, so an evaluation
  can also drop them.
"""

from __future__ import annotations

CHEXPERT_FINDINGS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
# Label ids are the column names as published: the ids of the `chexpert14` label set.
CHEXPERT_LABELS: tuple[str, ...] = CHEXPERT_FINDINGS
UNCERTAIN_POLICIES: tuple[str, ...] = ("zeros", "ones", "paper")
_PAPER_ONES = {"Atelectasis", "Edema"}


def chexpert_labels(row: dict[str, str], uncertain: str = "zeros") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(positive label ids, uncertain label ids) of one table row under the `uncertain` policy."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain policy must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    positive: list[str] = []
    unsure: list[str] = []
    for finding, label in zip(CHEXPERT_FINDINGS, CHEXPERT_LABELS):
        value = _value(row.get(finding, ""))
        if value == 1:
            positive.append(label)
        elif value == -1:
            unsure.append(label)
            if uncertain == "ones" or (uncertain == "paper" and finding in _PAPER_ONES):
                positive.append(label)
    return tuple(positive), tuple(unsure)


def _value(cell: str) -> int | None:
    cell = cell.strip()
    if not cell:
        return None
    try:
        return int(float(cell))
    except ValueError:
        return None
