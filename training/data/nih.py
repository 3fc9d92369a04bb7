"""NIH ChestX-ray14 (Wang et al., CVPR 2017): `Data_Entry_2017*.csv` + the PNG images found under the folder.

The label table covers all 112,120 images; a record is yielded for each image file actually present
(the table row supplies labels, patient, age, sex and view), so a subset folder reads as that subset.
`Finding Labels` is `|`-joined; label ids are those names as published (`Cardiomegaly`,
`Pleural_Thickening`, `No Finding`), the ids of the `nih14` label set. Splits: the official
`train_val_list.txt` / `test_list.txt` when present (train_val -> "train"), else the image's folder
name (`train/`, `valid/`, `test/`), else a patient hash (no patient crosses splits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.csvfiles import read_rows
from training.data.records import CaseRecord
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown
from training.data.splits import patient_split

NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
NIH_LABELS: tuple[str, ...] = NIH_FINDINGS + (NO_FINDING,)
_FOLDER_SPLITS = {"train": "train", "training": "train", "valid": "val", "validation": "val", "val": "val",
                  "test": "test"}


def read_nih(path: str | Path, views: str = "", **options: Any) -> CaseSource:
    """NIH ChestX-ray14 under `path`; `views` (e.g. "PA" or "PA,AP") filters on View Position."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("nih", options)
    tables = sorted(root.glob("Data_Entry_2017*.csv*"))
    if not tables:
        raise SourceError(f"{root} has no Data_Entry_2017*.csv(.gz); point nih: at the ChestX-ray14 folder")
    table = {row["Image Index"]: row for row in read_rows(tables[-1])}
    # By image name (= patient order), not by folder, so a --limit takes normal and abnormal alike.
    images = sorted((p for p in root.rglob("*.png") if not p.name.startswith(".")), key=lambda p: (p.name, str(p)))
    official = _official_splits(root)
    wanted_views = {v.strip().upper() for v in views.split(",") if v.strip()}

    def produce() -> Iterator[CaseRecord | Skipped]:
        for image in images:
            row = table.get(image.name)
            case_id = f"nih-{image.stem}"
            if row is None:
                yield Skipped(case_id, "image not in Data_Entry table", image.name)
                continue
            view = row.get("View Position", "")
            if wanted_views and view.upper() not in wanted_views:
                yield Skipped(case_id, "view filtered out", view)
                continue
            findings = [f.strip() for f in row.get("Finding Labels", "").split("|") if f.strip()]
            labels = tuple(findings)
            raw_patient = row.get("Patient ID", "")
            patient = f"nih-p{int(raw_patient) if raw_patient.isdigit() else raw_patient}"
            split = official.get(image.name) or _folder_split(image, root) or patient_split(patient)
            yield CaseRecord(
                case_id=case_id,
                patient_id=patient,
                xray_path=str(image),
                labels=labels,
                split=split,
                metadata={"source": "nih", "view": view, "age": row.get("Patient Age", ""),
                          "sex": {"M": "male", "F": "female"}.get(row.get("Patient Gender", ""), ""),
                          "follow_up": row.get("Follow-up #", "")},
            )

    return CaseSource("nih", produce, NIH_LABELS, total=len(images), **common)


def _official_splits(root: Path) -> dict[str, str]:
    splits: dict[str, str] = {}
    for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        listing = root / name
        if listing.is_file():
            for line in listing.read_text().split():
                splits[line.strip()] = split
    return splits


def _folder_split(image: Path, root: Path) -> str | None:
    for part in image.relative_to(root).parts[:-1]:
        if part.lower() in _FOLDER_SPLITS:
            return _FOLDER_SPLITS[part.lower()]
    return None
