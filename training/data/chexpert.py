"""CheXpert (Irvin et al., AAAI 2019): `train.csv` / `valid.csv` (and `test.csv` when present) + JPEGs.

Layout: `CheXpert-v1.0[-small]/{train,valid}.csv`, images `train/patient00001/study1/view1_frontal.jpg`.
The CSV `Path` column starts with the dataset folder's own name (`CheXpert-v1.0-small/train/...`), so
it is resolved against the folder's parent, or with that first part stripped. Columns: Path, Sex, Age,
Frontal/Lateral, AP/PA, then the 14 observations (policy for 1 / 0 / -1 / blank in
`training.data.chexpert_labels`, option `uncertain`). CheXpert has no reports: records carry the
X-ray and labels only. Splits: train.csv -> train, valid.csv -> val, test.csv -> test. `views`
filters on AP/PA ("PA,AP" = frontal only, the default; "" keeps laterals too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.chexpert_labels import CHEXPERT_LABELS, chexpert_labels
from training.data.csvfiles import read_rows
from training.data.records import CaseRecord
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown

_TABLES = (("train.csv", "train"), ("valid.csv", "val"), ("test.csv", "test"))


def read_chexpert(path: str | Path, views: str = "PA,AP", uncertain: str = "zeros", **options: Any) -> CaseSource:
    """CheXpert under `path` (the CheXpert-v1.0 or CheXpert-v1.0-small folder)."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("chexpert", options)
    tables = [(root / name, split) for name, split in _TABLES if (root / name).is_file()]
    if not tables:
        raise SourceError(f"{root} has no train.csv / valid.csv; point chexpert: at the CheXpert-v1.0 folder")
    rows = [(row, split) for table, split in tables for row in read_rows(table)]
    wanted = {v.strip().upper() for v in views.split(",") if v.strip()}

    def produce() -> Iterator[CaseRecord | Skipped]:
        for row, split in rows:
            relative = row.get("Path", "")
            case_id = "chexpert-" + "-".join(Path(relative).with_suffix("").parts[-3:])
            view = (row.get("AP/PA") or "").upper()
            if wanted and (row.get("Frontal/Lateral", "Frontal") != "Frontal" or (view and view not in wanted)):
                yield Skipped(case_id, "view filtered out", f"{row.get('Frontal/Lateral', '')} {view}".strip())
                continue
            image = _resolve(root, relative)
            if image is None:
                yield Skipped(case_id, "image file missing", relative)
                continue
            positive, unsure = chexpert_labels(row, uncertain)
            patient = next((p for p in Path(relative).parts if p.startswith("patient")), relative)
            yield CaseRecord(
                case_id=case_id,
                patient_id=f"chexpert-{patient}",
                xray_path=str(image),
                labels=positive,
                split=split,
                metadata={k: v for k, v in {
                    "source": "chexpert", "view": view or row.get("Frontal/Lateral", ""),
                    "sex": (row.get("Sex") or "").lower(), "age": row.get("Age", ""),
                    "uncertain_labels": ";".join(unsure),
                }.items() if v},
            )

    return CaseSource("chexpert", produce, CHEXPERT_LABELS, total=len(rows), **common)


def _resolve(root: Path, relative: str) -> Path | None:
    parts = Path(relative).parts
    for candidate in (root.parent / relative, root / Path(*parts[1:]) if len(parts) > 1 else None, root / relative):
        if candidate is not None and candidate.is_file():
            return candidate
    return None
