"""What the Python SDK takes and returns: query builders (numpy/paths -> messages) and plain result types.

Kept apart from `service.client` so that a reader sees the data shapes in one place and the channel
handling (retries, metadata, errors) in the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protos.tribind.v1 import tribind_pb2 as pb
from service.modalities import MODALITY_TO_PB, PB_TO_MODALITY


def modality_pb(name: str) -> int:
    if name not in MODALITY_TO_PB:
        raise ValueError(f"unknown modality {name!r}; use one of {', '.join(MODALITY_TO_PB)}")
    return MODALITY_TO_PB[name]


# -- inputs ---------------------------------------------------------------------------------------

def xray_item(image: bytes | str | Path) -> pb.Item:
    """An X-ray item from a PNG/JPEG/DICOM file path or its bytes."""
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    return pb.Item(xray=pb.XRayImage(data=data))


def ecg_signal(signal: np.ndarray, sampling_rate_hz: float, lead_names: Sequence[str]) -> pb.EcgSignal:
    array = np.asarray(signal, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"an ECG is [n_leads, n_samples]; got shape {array.shape}")
    return pb.EcgSignal(
        samples=array.reshape(-1).tolist(),
        n_leads=array.shape[0],
        n_samples=array.shape[1],
        lead_names=list(lead_names),
        sampling_rate_hz=float(sampling_rate_hz),
    )


def wfdb_record(record: str | Path) -> pb.WfdbRecord:
    """The header and signal files of a WFDB record given by its path without extension (`ecg/P1_0`)."""
    base = Path(record)
    if base.suffix in (".hea", ".dat"):
        base = base.with_suffix("")
    header_path = base.with_suffix(".hea")
    if not header_path.is_file():
        raise FileNotFoundError(f"{header_path} not found; pass the WFDB record path without extension")
    header = header_path.read_bytes()
    record_line, *signal_lines = [ln for ln in header.decode("latin-1").splitlines()
                                  if ln.strip() and not ln.lstrip().startswith("#")]
    n_signals = int(record_line.split()[1]) if len(record_line.split()) > 1 else 0
    names = list(dict.fromkeys(line.split()[0] for line in signal_lines[:n_signals]))
    if not names:
        raise ValueError(f"{header_path} lists no signals")
    if len(names) == 1:
        return pb.WfdbRecord(header=header, signal=(base.parent / names[0]).read_bytes())
    return pb.WfdbRecord(header=header, signal_files={name: (base.parent / name).read_bytes() for name in names})


def ecg_item(signal: np.ndarray | None = None, sampling_rate_hz: float = 0.0, lead_names: Sequence[str] = (),
             *, record: str | Path | None = None) -> pb.Item:
    """An ECG item from a [n_leads, n_samples] mV array with its rate and lead names, or from a WFDB record."""
    if record is not None:
        return pb.Item(ecg=pb.Ecg(wfdb=wfdb_record(record)))
    if signal is None:
        raise ValueError("give either signal (with sampling_rate_hz and lead_names) or record")
    return pb.Item(ecg=pb.Ecg(signal=ecg_signal(signal, sampling_rate_hz, lead_names)))


def text_item(text: str) -> pb.Item:
    return pb.Item(text=text)


def case_ref(case_id: str, modality: str) -> pb.CaseRef:
    return pb.CaseRef(case_id=case_id, modality=modality_pb(modality))


def vector(values: np.ndarray, modality: str, model_version: str = "") -> pb.Vector:
    return pb.Vector(modality=modality_pb(modality), values=np.asarray(values, dtype=np.float32).reshape(-1).tolist(),
                     model_version=model_version)


@dataclass
class CaseInput:
    """A case to upsert. Raw inputs and/or precomputed vectors ({modality: array}, with `model_version`)."""

    case_id: str
    patient_id: str
    study_time: str = ""
    labels: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    xray: bytes | str | Path | None = None
    ecg: pb.Item | None = None            # from `ecg_item(...)`
    report: str = ""
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)
    model_version: str = ""

    def to_pb(self) -> pb.Case:
        message = pb.Case(
            case_id=self.case_id,
            patient_id=self.patient_id,
            study_time=self.study_time or "",
            labels=list(self.labels),
            metadata={str(k): str(v) for k, v in self.metadata.items()},
            report=self.report or "",
        )
        if self.xray is not None:
            message.xray.CopyFrom(xray_item(self.xray).xray)
        if self.ecg is not None:
            message.ecg.CopyFrom(self.ecg.ecg)
        for modality, values in self.vectors.items():
            message.vectors.append(vector(values, modality, self.model_version))
        return message


@dataclass
class SearchFilter:
    labels_any: Sequence[str] = ()
    labels_all: Sequence[str] = ()
    labels_none: Sequence[str] = ()
    patient_in: Sequence[str] = ()
    patient_not_in: Sequence[str] = ()
    metadata_equals: Mapping[str, str] = field(default_factory=dict)
    time_from: str = ""
    time_to: str = ""

    def to_pb(self) -> pb.Filter:
        return pb.Filter(
            labels_any=list(self.labels_any), labels_all=list(self.labels_all), labels_none=list(self.labels_none),
            patient_in=list(self.patient_in), patient_not_in=list(self.patient_not_in),
            metadata_equals=dict(self.metadata_equals), time_from=self.time_from, time_to=self.time_to,
        )


# -- results --------------------------------------------------------------------------------------

@dataclass
class Embeddings:
    vectors: np.ndarray          # float32 [n, dim], L2-normalised
    modalities: list[str]
    model_version: str


@dataclass
class Hit:
    case_id: str
    patient_id: str
    modality: str
    score: float
    labels: list[str]
    metadata: dict[str, str]
    study_time: str

    @classmethod
    def from_pb(cls, hit: pb.Hit) -> "Hit":
        return cls(hit.case_id, hit.patient_id, PB_TO_MODALITY.get(hit.modality, ""), float(hit.score),
                   list(hit.labels), dict(hit.metadata), hit.study_time)


@dataclass
class SearchResult:
    hits: list[Hit]
    groups: dict[str, list[Hit]]   # patient_id -> hits, best group first (only with group_by_patient)
    model_version: str


@dataclass
class LabelScore:
    label: str
    score: float
    probability: float


@dataclass
class Classification:
    labels: list[LabelScore]       # best first
    label_set: str
    modality: str
    model_version: str


@dataclass
class StoredCase:
    case_id: str
    patient_id: str
    study_time: str
    labels: list[str]
    metadata: dict[str, str]
    modalities: list[str]
    model_version: str
    report: str = ""
    xray: bytes | None = None                             # PNG (or the JPEG as sent) with include_media
    ecg: tuple[np.ndarray, float, list[str]] | None = None  # (signal [leads, samples] mV, Hz, lead names)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, case: pb.Case) -> "StoredCase":
        ecg = None
        if case.ecg.HasField("signal"):
            s = case.ecg.signal
            ecg = (np.asarray(s.samples, dtype=np.float32).reshape(s.n_leads, s.n_samples),
                   float(s.sampling_rate_hz), list(s.lead_names))
        return cls(
            case_id=case.case_id, patient_id=case.patient_id, study_time=case.study_time,
            labels=list(case.labels), metadata=dict(case.metadata),
            modalities=[PB_TO_MODALITY[m] for m in case.modalities if m in PB_TO_MODALITY],
            model_version=case.model_version, report=case.report,
            xray=bytes(case.xray.data) if case.HasField("xray") and case.xray.data else None,
            ecg=ecg,
            vectors={PB_TO_MODALITY[v.modality]: np.asarray(v.values, dtype=np.float32)
                     for v in case.vectors if v.modality in PB_TO_MODALITY},
        )


@dataclass
class Stats:
    cases: int
    patients: int
    vectors: dict[str, int]
    index_kind: str
    model_version: str
    data_dir: str
    dim: int
