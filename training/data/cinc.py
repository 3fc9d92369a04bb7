"""PhysioNet/CinC Challenge 2020-2021 (Perez Alday et al. 2020; Reyna et al. 2021).

Layout: one folder per source database (`WFDB_CPSC2018/`, `WFDB_Ga/`, `WFDB_PTBXL/`, ... or
`training/cpsc_2018/g1/` in 2021), each record a `.hea` plus a MATLAB v4 `.mat` (variable `val`, ADC
units, gain in the header; 2021 also ships `.dat`). Headers carry `#Age:`, `#Sex:` and `#Dx:` SNOMED CT
codes, mapped to label ids by `training.data.snomed`. The challenge gives no patient ids, so each
record is its own patient, and splits are a record hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.header_comments import dx_codes, parse_comments
from training.data.records import CaseRecord
from training.data.snomed import snomed_labels, vocabulary
from training.data.sources import CaseSource, Skipped, SourceError, common_options, reject_unknown
from training.data.splits import patient_split
from training.data.wfdb_folder import find_headers, read_header


def read_cinc(path: str | Path, **options: Any) -> CaseSource:
    """Every CinC record under `path`; records without a `#Dx:` line are skipped."""
    root = Path(path)
    common = common_options(options)
    reject_unknown("cinc", options)
    headers = find_headers(root)
    if not headers:
        raise SourceError(f"no .hea files under {root}; point cinc: at the challenge's training folder")

    def produce() -> Iterator[CaseRecord | Skipped]:
        for header in headers:
            info = read_header(header)
            if isinstance(info, Skipped):
                yield info
                continue
            facts = parse_comments(info.comments)
            codes = dx_codes(facts)
            if not codes:
                yield Skipped(info.record.name, "no #Dx line", str(header))
                continue
            labels, abbreviations = snomed_labels(codes)
            database = info.record.parent.name
            metadata = {
                "source": "cinc",
                "database": database,
                "fs": f"{info.fs:g}",
                "n_samples": str(info.n_samples),
                "lead_names": ",".join(info.lead_names),
                "age": "" if facts.get("age", "").lower() in ("nan", "unknown") else facts.get("age", ""),
                "sex": facts.get("sex", ""),
                "dx_snomed": ",".join(codes),
                "dx_abbreviations": ",".join(abbreviations),
                "comments": "\n".join(info.comments),
            }
            patient = f"cinc-{info.record.name}"
            yield CaseRecord(
                case_id=f"cinc-{info.record.name}",
                patient_id=patient,
                ecg_path=str(info.record),
                labels=labels,
                split=patient_split(patient),
                metadata={k: v for k, v in metadata.items() if v},
            )

    return CaseSource(f"cinc:{root.name}", produce, vocabulary(), total=len(headers), **common)
