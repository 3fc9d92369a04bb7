"""PTB-XL (Wagner et al., Sci Data 2020): `ptbxl_database.csv` + `scp_statements.csv` + WFDB records.

Labels follow the dataset's own aggregation (and the PTB-XL benchmark of Strodthoff et al. 2021):
- `superclass`: diagnostic_class of the diagnostic statements (NORM, MI, STTC, CD, HYP);
- `subclass`: diagnostic_subclass of the diagnostic statements (23 classes, e.g. IMI, LVH, CLBBB);
- `statements`: all 71 SCP codes (diagnostic, form and rhythm); `diagnostic` / `form` / `rhythm`: each
  group alone.
`scp_codes` holds a likelihood (0-100) per statement; `min_likelihood` (default 0 = every listed
statement, as in the benchmark) drops statements the cardiologist was less sure of. Every task's labels
are kept in metadata (`labels_<task>`) so one read serves any task. Splits: strat_fold 1-8 train,
9 val, 10 test (the folds the authors recommend; fold 9/10 were validated by a human cardiologist).
The `report` column (mostly German machine statements) is the text modality.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.csvfiles import find_table, read_rows
from training.data.records import CaseRecord
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown

TASKS: tuple[str, ...] = ("superclass", "subclass", "statements", "diagnostic", "form", "rhythm")
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
_SEX = {"0": "male", "1": "female", "0.0": "male", "1.0": "female"}


class ScpStatements:
    """scp_statements.csv: code -> (diagnostic/form/rhythm flags, class, subclass)."""

    def __init__(self, path: Path) -> None:
        self.rows: dict[str, dict[str, str]] = {}
        for row in read_rows(path):
            code = row.get("") or row.get("Unnamed: 0") or next(iter(row.values()))
            self.rows[code] = row

    def vocabulary(self, task: str) -> tuple[str, ...]:
        if task == "superclass":
            present = {row["diagnostic_class"] for row in self.rows.values() if row.get("diagnostic_class")}
            return tuple(c for c in SUPERCLASSES if c in present) + tuple(sorted(present - set(SUPERCLASSES)))
        if task == "subclass":
            return tuple(sorted({row["diagnostic_subclass"] for row in self.rows.values() if row.get("diagnostic_subclass")}))
        if task == "statements":
            return tuple(sorted(self.rows))
        return tuple(sorted(code for code, row in self.rows.items() if _flag(row.get(task))))

    def labels(self, scp_codes: dict[str, float], task: str, min_likelihood: float) -> tuple[str, ...]:
        found: list[str] = []
        for code, likelihood in scp_codes.items():
            row = self.rows.get(code)
            if row is None or float(likelihood) < min_likelihood:
                continue
            if task == "superclass":
                value = row.get("diagnostic_class") if _flag(row.get("diagnostic")) else None
            elif task == "subclass":
                value = row.get("diagnostic_subclass") if _flag(row.get("diagnostic")) else None
            elif task == "statements":
                value = code
            else:
                value = code if _flag(row.get(task)) else None
            if value and value not in found:
                found.append(value)
        order = self.vocabulary(task)
        return tuple(sorted(found, key=order.index))


def read_ptbxl(path: str | Path, rate: int | str = 500, task: str = "superclass",
               min_likelihood: float | str = 0.0, **options: Any) -> CaseSource:
    """PTB-XL at `rate` 100 or 500 Hz, labels for `task` (see module docstring)."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("ptbxl", options)
    rate = int(rate)
    if rate not in (100, 500):
        raise SourceError(f"ptbxl: rate must be 100 or 500 (the published sampling rates), got {rate}")
    if task not in TASKS:
        raise SourceError(f"ptbxl: task must be one of {TASKS}, got {task!r}")
    database = find_table(root, "ptbxl_database.csv")
    statements_path = find_table(root, "scp_statements.csv")
    if database is None or statements_path is None:
        raise SourceError(f"{root} is not a PTB-XL folder: ptbxl_database.csv and scp_statements.csv are needed")
    statements = ScpStatements(statements_path)
    rows = list(read_rows(database))
    threshold = float(min_likelihood)
    column = "filename_lr" if rate == 100 else "filename_hr"

    def produce() -> Iterator[CaseRecord | Skipped]:
        for row in rows:
            ecg_id = _integer(row.get("ecg_id"))
            case_id = f"ptbxl-{ecg_id}"
            relative = row.get(column, "")
            if not relative:
                yield Skipped(case_id, "no record file name", column)
                continue
            record = root / relative
            if not record.with_name(record.name + ".hea").is_file():
                yield Skipped(case_id, f"ecg record missing at {rate} Hz", str(record) + ".hea")
                continue
            try:
                scp_codes = {str(k): float(v) for k, v in ast.literal_eval(row.get("scp_codes") or "{}").items()}
            except (ValueError, SyntaxError):
                yield Skipped(case_id, "unparseable scp_codes", row.get("scp_codes", "")[:60])
                continue
            fold = _integer(row.get("strat_fold"))
            metadata = {
                "source": "ptbxl",
                "ecg_id": ecg_id,
                "strat_fold": fold,
                "scp_codes": json.dumps(scp_codes),
                "sampling_rate": str(rate),
                "age": _integer(row.get("age")),
                "sex": _SEX.get(row.get("sex", ""), ""),
                "ecg_report": row.get("report", ""),
            }
            for other in TASKS:
                metadata[f"labels_{other}"] = ";".join(statements.labels(scp_codes, other, threshold))
            yield CaseRecord(
                case_id=case_id,
                patient_id=f"ptbxl-p{_integer(row.get('patient_id'))}",
                study_time=(row.get("recording_date") or "").replace(" ", "T") or None,
                ecg_path=str(record),
                report=(row.get("report") or "").strip() or None,
                labels=statements.labels(scp_codes, task, threshold),
                split={"9": "val", "10": "test"}.get(fold, "train") if fold else None,
                metadata={key: value for key, value in metadata.items() if value != ""},
            )

    return CaseSource(f"ptbxl@{rate}Hz", produce, statements.vocabulary(task), total=len(rows), **common)


def _flag(value: str | None) -> bool:
    try:
        return float(value or 0) == 1.0
    except ValueError:
        return False


def _integer(value: str | None) -> str:
    """'15709.0' -> '15709' (pandas wrote integer ids as floats); '' stays ''."""
    if not value:
        return ""
    try:
        return str(int(float(value)))
    except ValueError:
        return value
