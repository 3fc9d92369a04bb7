"""The one record type every data source yields: phantom manifests, PTB-XL, MIMIC, manifests.

Paths are absolute once a reader has produced the record. Any of the three modalities may be absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


@dataclass
class CaseRecord:
    case_id: str
    patient_id: str
    study_time: str | None = None          # ISO 8601, e.g. "2180-07-23T12:30:00"
    xray_path: str | None = None           # PNG / JPEG / DICOM file
    ecg_path: str | None = None            # WFDB record path without extension, or a .mat / .hea path
    report: str | None = None              # the text modality: radiology report and/or ECG statements
    labels: tuple[str, ...] = ()           # canonical label ids of the source's vocabulary
    split: str | None = None               # "train" / "val" / "test" where the source defines one
    metadata: dict[str, str] = field(default_factory=dict)
    xray_masks: dict[str, str] = field(default_factory=dict)  # label -> mask PNG (phantom truth)
    ecg_masks: str | None = None           # JSON file of per-label time intervals (phantom truth)

    def modalities(self) -> tuple[str, ...]:
        present = []
        if self.xray_path:
            present.append("xray")
        if self.ecg_path:
            present.append("ecg")
        if self.report and self.report.strip():
            present.append("text")
        return tuple(present)
