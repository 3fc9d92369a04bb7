"""MIMIC-IV-ECG (Gow et al., PhysioNet 2023): `record_list.csv` + `machine_measurements.csv` + WFDB at 500 Hz.

Layout (v1.0): `record_list.csv` (subject_id, study_id, file_name, ecg_time, path) where `path` is the
record without extension (`files/p1000/p10000032/s40689238/40689238`); `machine_measurements.csv`
holds the machine's statements `report_0` ... `report_17`, joined here as the text modality. The
dataset publishes no diagnosis labels and no split: splits are a hash of subject_id, the same one
`mimic-cxr:` uses, so a patient is in the same split in both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.csvfiles import find_table, read_rows
from training.data.records import CaseRecord
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown
from training.data.splits import patient_split

N_REPORT_COLUMNS = 18


def machine_report(row: dict[str, str]) -> str:
    """report_0 ... report_17 -> one text, each statement ending with a period."""
    statements = [row.get(f"report_{i}", "").strip() for i in range(N_REPORT_COLUMNS)]
    return " ".join(s if s.endswith((".", "!", "?")) else f"{s}." for s in statements if s)


def read_mimic_ecg(path: str | Path, **options: Any) -> CaseSource:
    """MIMIC-IV-ECG under `path` (the folder holding record_list.csv and files/)."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("mimic-ecg", options)
    record_list = find_table(root, "record_list.csv")
    if record_list is None:
        raise SourceError(f"{root} has no record_list.csv; point mimic-ecg: at the MIMIC-IV-ECG folder")
    measurements = find_table(root, "machine_measurements.csv")
    reports: dict[str, str] = {}
    if measurements is not None:
        reports = {row["study_id"]: machine_report(row) for row in read_rows(measurements)}
    rows = list(read_rows(record_list))

    def produce() -> Iterator[CaseRecord | Skipped]:
        for row in rows:
            study = row.get("study_id", "")
            case_id = f"mimic-ecg-{study}"
            record = root / row.get("path", "")
            if not row.get("path") or not record.with_name(record.name + ".hea").is_file():
                yield Skipped(case_id, "ecg record missing", f"{record}.hea")
                continue
            report = reports.get(study, "")
            patient = f"mimic-p{row.get('subject_id', '')}"
            yield CaseRecord(
                case_id=case_id,
                patient_id=patient,
                study_time=row.get("ecg_time", "").replace(" ", "T") or None,
                ecg_path=str(record),
                report=report or None,
                split=patient_split(patient),
                metadata={"source": "mimic-ecg", "subject_id": row.get("subject_id", ""), "study_id": study,
                          "ecg_report": report},
            )

    return CaseSource("mimic-ecg", produce, (), total=len(rows), **common)
