"""SNOMED CT codes of the PhysioNet/CinC 2020-2021 challenge (`# Dx:` header lines) -> label ids.

`snomed_ecg.csv` holds the 30 scored diagnoses of the challenge's dx_mapping_scored.csv plus ten
frequent unscored ones (LVH, MI, ischaemia, AV blocks, ST changes). A label id is the snake_case
of the challenge's name (`atrial_fibrillation`); a code not in the table keeps a stable id
`snomed_<code>` so no diagnosis is silently dropped.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

_TABLE = Path(__file__).with_name("snomed_ecg.csv")


def label_id(name: str) -> str:
    """'1st degree av block' -> '1st_degree_av_block'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@lru_cache(maxsize=1)
def snomed_table() -> dict[str, tuple[str, str]]:
    """code -> (label id, abbreviation)."""
    with open(_TABLE, newline="", encoding="utf-8") as handle:
        return {row["snomed_ct"]: (label_id(row["name"]), row["abbreviation"]) for row in csv.DictReader(handle)}


def snomed_labels(codes: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SNOMED codes -> (label ids, abbreviations), order kept, duplicates dropped."""
    table = snomed_table()
    labels: list[str] = []
    abbreviations: list[str] = []
    for code in codes:
        label, abbreviation = table.get(code, (f"snomed_{code}", code))
        if label not in labels:
            labels.append(label)
            abbreviations.append(abbreviation)
    return tuple(labels), tuple(abbreviations)


def vocabulary() -> tuple[str, ...]:
    return tuple(label for label, _ in snomed_table().values())
