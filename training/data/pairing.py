"""MIMIC tri-modal pairing: an ECG (MIMIC-IV-ECG) and a chest X-ray study (MIMIC-CXR-JPG) of the same
`subject_id` taken within a window (default +-60 days, as MoRE did) become one case with all three
modalities.

One-to-many without duplicates: per patient, every (X-ray, ECG) pair inside the window is a
candidate; candidates are taken closest-in-time first and each X-ray and each ECG is used at most
once, so a patient with 3 X-rays and 1 ECG yields one case (the closest pair), not three cases that
share an ECG. Splits are a hash of the patient id (`training.data.splits`), so no patient crosses
splits, whatever the sources' own splits say.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from training.data.records import CaseRecord
from training.data.sources import (
    CaseSource, Skipped, SourceError, as_bool, common_options, open_source, reject_unknown,
)
from training.data.splits import patient_split

DEFAULT_WINDOW_DAYS = 60.0


def pair_mimic(ecg_source: Iterable[CaseRecord], cxr_source: Iterable[CaseRecord],
               window_days: float = DEFAULT_WINDOW_DAYS, **options: Any) -> CaseSource:
    """Tri-modal CaseRecords from MIMIC-IV-ECG and MIMIC-CXR records of the same patients."""
    common = common_options(options)
    reject_unknown("mimic pairing", options)
    window = float(window_days)

    def produce() -> Iterator[CaseRecord | Skipped]:
        ecgs: dict[str, list[tuple[datetime, CaseRecord]]] = defaultdict(list)
        for record in ecg_source:
            when = _parse_time(record.study_time)
            if when is None:
                yield Skipped(record.case_id, "ecg without time", record.study_time or "")
                continue
            ecgs[record.patient_id].append((when, record))
        for skipped in getattr(ecg_source, "skipped", []):
            yield Skipped(skipped[0], "ecg source", skipped[1])
        xrays: dict[str, list[tuple[datetime, CaseRecord]]] = defaultdict(list)
        for record in cxr_source:
            when = _parse_time(record.study_time)
            if when is None:
                yield Skipped(record.case_id, "x-ray without time", record.study_time or "")
                continue
            xrays[record.patient_id].append((when, record))
        for skipped in getattr(cxr_source, "skipped", []):
            yield Skipped(skipped[0], "x-ray source", skipped[1])

        for patient in sorted(xrays):
            candidates = sorted(
                (abs((x_time - e_time).total_seconds()) / 86400.0, xi, ei)
                for xi, (x_time, _) in enumerate(xrays[patient])
                for ei, (e_time, _) in enumerate(ecgs.get(patient, []))
                if abs((x_time - e_time).total_seconds()) / 86400.0 <= window
            )
            used_x: set[int] = set()
            used_e: set[int] = set()
            for days, xi, ei in candidates:
                if xi in used_x or ei in used_e:
                    continue
                used_x.add(xi)
                used_e.add(ei)
                yield _combine(xrays[patient][xi], ecgs[patient][ei], days)
            for xi, (_, xray) in enumerate(xrays[patient]):
                if xi not in used_x:
                    reason = "no ECG of the patient within the window" if not candidates else "every nearby ECG already paired"
                    yield Skipped(xray.case_id, reason, f"+-{window:g} days")

    return CaseSource("mimic-pairs", produce, (), **common)


def open_mimic_pairs(ecg_path: str, cxr_path: str, window_days: float = DEFAULT_WINDOW_DAYS,
                     **cxr_options: Any) -> CaseSource:
    """Convenience: open both MIMIC folders and pair them."""
    progress = cxr_options.pop("progress", None)
    ecg = open_source(f"mimic-ecg:{ecg_path}", progress=False)
    cxr = open_source(f"mimic-cxr:{cxr_path}", progress=False, **cxr_options)
    return pair_mimic(ecg, cxr, window_days, progress=as_bool(progress) if progress is not None else None)


def _combine(xray: tuple[datetime, CaseRecord], ecg: tuple[datetime, CaseRecord], days: float) -> CaseRecord:
    (x_time, x_rec), (e_time, e_rec) = xray, ecg
    xray_report = x_rec.metadata.get("xray_report", x_rec.report or "")
    ecg_report = e_rec.metadata.get("ecg_report", e_rec.report or "")
    report = " ".join(part for part in (xray_report, f"ECG: {ecg_report}" if ecg_report else "") if part)
    labels = tuple(dict.fromkeys(x_rec.labels + e_rec.labels))
    metadata = {**{f"ecg_{k}": v for k, v in e_rec.metadata.items() if k != "ecg_report"},
                **x_rec.metadata,
                "source": "mimic-pairs", "ecg_time": e_time.isoformat(), "xray_time": x_time.isoformat(),
                "delta_days": f"{(e_time - x_time).total_seconds() / 86400.0:.2f}",
                "xray_report": xray_report, "ecg_report": ecg_report}
    return CaseRecord(
        case_id=f"mimic-pair-{x_rec.case_id.removeprefix('mimic-cxr-')}-{e_rec.case_id.removeprefix('mimic-ecg-')}",
        patient_id=x_rec.patient_id,
        study_time=x_rec.study_time,
        xray_path=x_rec.xray_path,
        ecg_path=e_rec.ecg_path,
        report=report or None,
        labels=labels,
        split=patient_split(x_rec.patient_id),
        metadata={k: v for k, v in metadata.items() if v},
    )


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", ""))
    except ValueError:
        return None


def read_mimic_pairs(path: str | Path, ecg: str = "", cxr: str = "", window_days: float | str = DEFAULT_WINDOW_DAYS,
                     **options: Any) -> CaseSource:
    """`mimic:ROOT`: pair the MIMIC-IV-ECG and MIMIC-CXR-JPG folders found under ROOT (or given as
    options `ecg` / `cxr`, relative to ROOT); other options go to the mimic-cxr reader."""
    root = Path(path)
    ecg_root = root / ecg if ecg else _find_folder(root, ("record_list.csv", "record_list.csv.gz"))
    cxr_root = root / cxr if cxr else _find_folder(root, ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"))
    if ecg_root is None or cxr_root is None:
        raise SourceError(f"{root} must hold a MIMIC-IV-ECG folder (record_list.csv) and a MIMIC-CXR-JPG folder "
                          "(mimic-cxr-2.0.0-metadata.csv.gz); or pass ?ecg=SUBDIR&cxr=SUBDIR")
    return open_mimic_pairs(str(ecg_root), str(cxr_root), float(window_days), **options)


def _find_folder(root: Path, markers: tuple[str, ...], depth: int = 3) -> Path | None:
    frontier = [root]
    for _ in range(depth + 1):
        for folder in frontier:
            if any((folder / marker).is_file() for marker in markers):
                return folder
        frontier = sorted(child for folder in frontier for child in folder.iterdir() if child.is_dir()
                          and child.name != "files")
    return None
