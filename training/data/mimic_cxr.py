"""MIMIC-CXR-JPG (Johnson et al., PhysioNet 2019) with the MIMIC-CXR free-text reports.

Layout (v2.0.0 / 2.1.0): `mimic-cxr-2.0.0-metadata.csv.gz` (dicom_id, subject_id, study_id,
ViewPosition, StudyDate, StudyTime, ...), `mimic-cxr-2.0.0-split.csv.gz` (dicom_id, ..., split =
train / validate / test), `mimic-cxr-2.0.0-chexpert.csv.gz` (subject_id, study_id, 14 findings),
images `files/p10/p10000032/s50414267/<dicom_id>.jpg`, reports `files/p10/p10000032/s50414267.txt`
(from MIMIC-CXR; looked up under the root, under `mimic-cxr-reports/`, or under option `reports`).

One record per study by default (`per_study=1`): the first image in `views` order (PA before AP), so
a study's report appears once per contrastive batch; `per_study=0` yields every matching image.
Labels follow the CheXpert policy in `training.data.chexpert_labels` (option `uncertain`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.chexpert_labels import CHEXPERT_LABELS, chexpert_labels
from training.data.csvfiles import find_table, read_rows
from training.data.records import CaseRecord
from training.data.report_sections import compose_report, findings_impression
from training.data.sources import CaseSource, Skipped, SourceError, as_bool, common_options, reject_unknown


_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def read_mimic_cxr(path: str | Path, views: str = "PA,AP", per_study: bool | str = True,
                   uncertain: str = "zeros", reports: str | Path | None = None, **options: Any) -> CaseSource:
    """MIMIC-CXR-JPG under `path`; `views` e.g. "PA" or "PA,AP" ("" = all views)."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("mimic-cxr", options)
    metadata_table = find_table(root, "mimic-cxr-2.0.0-metadata.csv")
    if metadata_table is None:
        raise SourceError(f"{root} has no mimic-cxr-2.0.0-metadata.csv(.gz); "
                          "point mimic-cxr: at the MIMIC-CXR-JPG folder")
    split_table = find_table(root, "mimic-cxr-2.0.0-split.csv")
    label_table = find_table(root, "mimic-cxr-2.0.0-chexpert.csv")
    splits: dict[str, str | None] = {}
    if split_table:
        splits = {row["dicom_id"]: _SPLITS.get(row.get("split", ""), row.get("split")) for row in read_rows(split_table)}
    labels = {row["study_id"]: row for row in read_rows(label_table)} if label_table else {}
    view_order = [v.strip().upper() for v in views.split(",") if v.strip()]
    report_roots = [Path(reports)] if reports else [root, root / "mimic-cxr-reports", root.parent / "mimic-cxr-reports"]
    one_per_study = as_bool(per_study)

    studies: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_rows(metadata_table):
        studies[row["study_id"]].append(row)

    def produce() -> Iterator[CaseRecord | Skipped]:
        for study_id, images in studies.items():
            chosen = _choose(images, view_order, one_per_study)
            if not chosen:
                yield Skipped(f"mimic-cxr-s{study_id}", "no image in the wanted views",
                              ",".join(sorted({i.get("ViewPosition", "") or "none" for i in images})))
                continue
            subject = images[0]["subject_id"]
            study_folder = Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}"
            report_file = _find_report(report_roots, study_folder)
            if report_file is None:
                findings = impression = ""
            else:
                findings, impression = findings_impression(report_file.read_text(errors="replace"))
            report = compose_report(findings, impression)
            positive, unsure = chexpert_labels(labels.get(study_id, {}), uncertain)
            for image in chosen:
                case_id = f"mimic-cxr-{image['dicom_id']}"
                jpg = root / study_folder / f"{image['dicom_id']}.jpg"
                if not jpg.is_file():
                    yield Skipped(case_id, "image file missing", str(jpg))
                    continue
                yield CaseRecord(
                    case_id=case_id,
                    patient_id=f"mimic-p{subject}",
                    study_time=_study_time(image.get("StudyDate", ""), image.get("StudyTime", "")),
                    xray_path=str(jpg),
                    report=report or None,
                    labels=positive,
                    split=splits.get(image["dicom_id"]),
                    metadata={k: v for k, v in {
                        "source": "mimic-cxr", "subject_id": subject, "study_id": study_id,
                        "dicom_id": image["dicom_id"], "view": image.get("ViewPosition", ""),
                        "xray_report": report, "findings": findings, "impression": impression,
                        "uncertain_labels": ";".join(unsure),
                        "report_missing": "" if report_file else "yes",
                    }.items() if v},
                )

    return CaseSource("mimic-cxr", produce, CHEXPERT_LABELS, total=len(studies), **common)


def _choose(images: list[dict[str, str]], view_order: list[str], one_per_study: bool) -> list[dict[str, str]]:
    if view_order:
        images = [i for i in images if i.get("ViewPosition", "").upper() in view_order]
        images.sort(key=lambda i: view_order.index(i.get("ViewPosition", "").upper()))
    return images[:1] if one_per_study else images


def _find_report(roots: list[Path], study_folder: Path) -> Path | None:
    for base in roots:
        candidate = base / study_folder.with_suffix(".txt")
        if candidate.is_file():
            return candidate
    return None


def _study_time(date: str, time: str) -> str | None:
    """StudyDate 21800506 + StudyTime 213014.531 -> '2180-05-06T21:30:14'."""
    if len(date) != 8 or not date.isdigit():
        return None
    clock = time.split(".")[0].zfill(6) if time else "000000"
    return f"{date[:4]}-{date[4:6]}-{date[6:]}T{clock[:2]}:{clock[2:4]}:{clock[4:6]}"
