"""`wfdb:PATH`: every WFDB record under a folder (PTB Diagnostic, MIT-BIH, any PhysioNet database).

Header comments are kept as context in metadata (`comments`, plus parsed age and sex); PTB
Diagnostic's `Reason for admission` becomes a label, and CinC-style `# Dx:` codes are mapped as in
the `cinc:` reader. PTB Diagnostic keeps its `patientNNN/` folder as the patient id; elsewhere each
record is its own patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from training.data.header_comments import dx_codes, parse_comments
from training.data.records import CaseRecord
from training.data.snomed import label_id, snomed_labels
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown
from training.data.splits import patient_split


class HeaderInfo(NamedTuple):
    record: Path            # record path without extension
    fs: float
    n_samples: int
    lead_names: list[str]
    comments: list[str]


def find_headers(root: Path) -> list[Path]:
    if root.is_file() and root.suffix == ".hea":
        return [root]
    return sorted(p for p in root.rglob("*.hea") if not p.name.startswith("."))


def read_header(header: Path) -> HeaderInfo | Skipped:
    """Parse one .hea and check its signal files exist; a Skipped says why a record cannot be used."""
    from encoders.preprocess.wfdb_format import HeaderError, Unsupported, parse_header

    record = header.with_suffix("")
    record_id = str(record.name)
    try:
        parsed = parse_header(header.read_bytes().decode("utf-8", errors="replace"))
    except Unsupported as exc:
        return Skipped(record_id, "unsupported record", f"{header}: {exc}")
    except HeaderError as exc:
        return Skipped(record_id, "unreadable header", f"{header}: {exc}")
    if not parsed.signals:
        return Skipped(record_id, "header without signals", str(header))
    missing = [name for name in parsed.file_names if not (header.parent / name).is_file()]
    if missing:
        return Skipped(record_id, "signal file missing", ", ".join(str(header.parent / m) for m in missing))
    return HeaderInfo(record, parsed.fs, int(parsed.n_samples or 0), parsed.lead_names, parsed.comments)


def read_wfdb_folder(path: str | Path, **options: Any) -> CaseSource:
    """Every `.hea` record under `path` (recursively) as a CaseRecord with the ECG modality."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("wfdb", options)
    headers = find_headers(root)
    if not headers:
        raise SourceError(f"no WFDB .hea files under {root}")

    def produce() -> Iterator[CaseRecord | Skipped]:
        for header in headers:
            info = read_header(header)
            if isinstance(info, Skipped):
                yield info
                continue
            facts = parse_comments(info.comments)
            labels, abbreviations = snomed_labels(dx_codes(facts))
            reason = facts.get("reason for admission", "")
            if reason and reason.lower() not in ("n/a", "unknown"):
                labels = labels + (label_id(reason),)
            patient = _patient_id(info.record, root)
            metadata = {
                "source": "wfdb",
                "fs": f"{info.fs:g}",
                "n_samples": str(info.n_samples),
                "lead_names": ",".join(info.lead_names),
                "comments": "\n".join(info.comments),
                "age": facts.get("age", ""),
                "sex": facts.get("sex", ""),
                "dx_abbreviations": ",".join(abbreviations),
            }
            yield CaseRecord(
                case_id=f"wfdb-{_relative_id(info.record, root)}",
                patient_id=patient,
                ecg_path=str(info.record),
                labels=labels,
                split=patient_split(patient),
                metadata={k: v for k, v in metadata.items() if v},
            )

    return CaseSource(f"wfdb:{root.name}", produce, (), total=len(headers), **common)


def _relative_id(record: Path, root: Path) -> str:
    base = root if root.is_dir() else root.parent
    return record.relative_to(base).as_posix()


def _patient_id(record: Path, root: Path) -> str:
    parent = record.parent.name
    if parent.lower().startswith("patient"):
        return f"wfdb-{parent}"
    return f"wfdb-{_relative_id(record, root)}"
