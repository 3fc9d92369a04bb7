"""Manifests: the phantom's `manifest.csv` and generic CSV / JSONL / Parquet case tables.

Columns (docs/architecture.md, "Case records and manifests"): case_id, patient_id, study_time, split,
age, sex, xray_path, ecg_path, report, xray_report, ecg_report, labels, xray_masks, ecg_masks,
attributes. Only case_id and at least one of xray_path / ecg_path / report are required; a generic
manifest may also use the short names in `_ALIASES`. Paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.csvfiles import read_rows
from training.data.records import CaseRecord
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown

_ALIASES: dict[str, str] = {
    "id": "case_id", "patient": "patient_id", "subject_id": "patient_id", "time": "study_time",
    "xray": "xray_path", "image": "xray_path", "image_path": "xray_path", "ecg": "ecg_path",
    "text": "report", "findings": "report",
}
_METADATA_COLUMNS = ("age", "sex", "xray_report", "ecg_report", "attributes")
_ECG_EXTENSIONS = (".hea", ".dat", ".mat")


def read_manifest(path: str | Path, **options: Any) -> CaseSource:
    """A manifest file (.csv, .csv.gz, .jsonl, .parquet) as a CaseSource."""
    path = Path(path)
    common = common_options(options)
    reject_unknown("manifest", options)
    if not path.is_file():
        raise SourceError(f"manifest {path} not found; pass a .csv, .jsonl or .parquet case table")
    rows = list(_load_rows(path))
    vocabulary = sorted({label for row in rows for label in _labels(row.get("labels"))})
    return CaseSource(f"manifest:{path.name}", lambda: _records(rows, path.parent), vocabulary,
                      total=len(rows), **common)


def read_phantom_dir(path: str | Path, **options: Any) -> CaseSource:
    """`phantom:DIR`: the manifest.csv that `tribind phantom` wrote into DIR."""
    manifest = Path(path) / "manifest.csv"
    if not manifest.is_file():
        raise SourceError(f"{path} has no manifest.csv; generate one with `tribind phantom --out {path}`")
    source = read_manifest(manifest, **options)
    source.name = f"phantom:{Path(path).name}"
    return source


def _load_rows(path: Path) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz", ".tsv")):
        rows: Iterator[dict[str, Any]] = read_rows(path)
    elif name.endswith((".jsonl", ".ndjson")):
        rows = _jsonl_rows(path)
    elif name.endswith(".parquet"):
        rows = _parquet_rows(path)
    else:
        raise SourceError(f"{path}: manifests are .csv, .jsonl or .parquet files")
    for row in rows:
        yield {_ALIASES.get(key, key): value for key, value in row.items()}


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None
    for row in rows:
        yield {key: ("" if value is None else value) for key, value in row.items()}


def _records(rows: list[dict[str, Any]], folder: Path) -> Iterator[CaseRecord | Skipped]:
    for number, row in enumerate(rows, 1):
        case_id = str(row.get("case_id") or "").strip()
        if not case_id:
            yield Skipped(f"row {number}", "no case_id")
            continue
        xray = _resolve(folder, row.get("xray_path"))
        ecg = _resolve(folder, row.get("ecg_path"))
        report = str(row.get("report") or "").strip() or None
        if xray is None and ecg is None and report is None:
            yield Skipped(case_id, "no modality", "xray_path, ecg_path and report are all empty")
            continue
        if xray is not None and not Path(xray).is_file():
            yield Skipped(case_id, "xray file missing", xray)
            continue
        if ecg is not None and not _ecg_exists(ecg):
            yield Skipped(case_id, "ecg record missing", f"{ecg}.hea")
            continue
        metadata = {key: _text(row[key]) for key in _METADATA_COLUMNS if _text(row.get(key))}
        try:
            masks = _json_object(row.get("xray_masks"))
        except (SourceError, json.JSONDecodeError) as exc:
            yield Skipped(case_id, "bad xray_masks", str(exc))
            continue
        yield CaseRecord(
            case_id=case_id,
            patient_id=str(row.get("patient_id") or case_id),
            study_time=_text(row.get("study_time")) or None,
            xray_path=xray,
            ecg_path=ecg,
            report=report,
            labels=tuple(_labels(row.get("labels"))),
            split=_text(row.get("split")) or None,
            metadata=metadata,
            xray_masks={label: str(folder / rel) for label, rel in masks.items()},
            ecg_masks=_resolve(folder, row.get("ecg_masks")),
        )


def _resolve(folder: Path, value: Any) -> str | None:
    text = _text(value)
    if not text:
        return None
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (folder / path))


def _ecg_exists(record: str) -> bool:
    path = Path(record)
    if path.suffix.lower() in _ECG_EXTENSIONS:
        path = path.with_suffix("")
    return path.with_name(path.name + ".hea").is_file()


def _labels(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    text = _text(value)
    if not text:
        return []
    separator = ";" if ";" in text else "|"
    return [part.strip() for part in text.split(separator) if part.strip()]


def _json_object(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    text = _text(value)
    if not text:
        return {}
    parsed = json.loads(text)
    if not isinstance(parsed, dict):
        raise SourceError(f"expected a JSON object, got {text[:60]!r}")
    return {str(k): str(v) for k, v in parsed.items()}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value).strip()
