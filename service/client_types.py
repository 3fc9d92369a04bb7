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
class ExplainOptions:
    """How to explain: `method` "chefer" (default) or "rollout"; `include_png` renders pictures (about a
    second each); `evidence_k` (label targets: Classify, or `explain(..., label=...)`) attaches the
    subject's k nearest library cases carrying the label, each with its own map (0..10)."""

    method: str = ""
    include_png: bool = False
    evidence_k: int = 0

    def to_pb(self) -> pb.ExplainOptions:
        return pb.ExplainOptions(method=self.method, include_png=self.include_png, evidence_k=self.evidence_k)


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
class Relevance:
    """One explained side: how much each region of one item drives `score` (cos with `target`).

    `relevance` is shaped: xray [gh, gw] ViT tokens of the model input (the film resized and padded to a
    square), token (r, c) centred on input pixel token_origin_px + (r, c) * token_stride_px; ecg [12, W] lead x time window (rows `lead_names`, window w covers
    time_offset_s + [w, w + 1) * window_s seconds) with `time_relevance` [W] summed over leads; text
    [n_words] with `words` and their character `spans` in the explained text. Values are >= 0.
    """

    modality: str
    method: str
    score: float
    target: str
    item: str
    relevance: np.ndarray
    time_relevance: np.ndarray | None = None
    token_origin_px: float = 0.0
    token_stride_px: float = 0.0
    window_s: float = 0.0
    time_offset_s: float = 0.0
    lead_names: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    truncated: bool = False

    @classmethod
    def from_pb(cls, message: pb.Relevance) -> "Relevance":
        shape = tuple(int(n) for n in message.shape)
        return cls(
            modality=PB_TO_MODALITY.get(message.modality, ""), method=message.method, score=float(message.score),
            target=message.target, item=message.item,
            relevance=np.asarray(message.values, dtype=np.float32).reshape(shape),
            time_relevance=np.asarray(message.time_values, dtype=np.float32) if message.time_values else None,
            token_origin_px=float(message.token_origin_px), token_stride_px=float(message.token_stride_px),
            window_s=float(message.window_s), time_offset_s=float(message.time_offset_s),
            lead_names=list(message.lead_names), words=list(message.words),
            spans=[(int(s.start), int(s.end)) for s in message.spans], truncated=message.truncated,
        )

    def as_dict(self) -> dict:
        """JSON-ready, with the keys of `encoders.explain.Explanation.as_dict`."""
        out = {"modality": self.modality, "method": self.method, "score": self.score, "target": self.target,
               "item": self.item, "relevance": self.relevance.tolist()}
        if self.modality == "xray":
            out.update(grid=list(self.relevance.shape), token_origin_px=self.token_origin_px,
                       token_stride_px=self.token_stride_px)
        if self.modality == "ecg":
            out.update(time_relevance=None if self.time_relevance is None else self.time_relevance.tolist(),
                       window_s=self.window_s, time_offset_s=self.time_offset_s, lead_names=self.lead_names)
        if self.modality == "text":
            out.update(words=self.words, spans=[list(span) for span in self.spans], truncated=self.truncated)
        return out

    def normalised(self) -> np.ndarray:
        """`relevance` scaled to [0, 1] by its maximum (all zeros stay zeros)."""
        peak = float(np.max(self.relevance)) if self.relevance.size else 0.0
        return self.relevance / peak if peak > 0 else np.zeros_like(self.relevance)


@dataclass
class CaseEvidence:
    """A library case carrying the label, near the subject (`score`: cosine with it), with its own map."""

    case_id: str
    score: float
    relevance: Relevance
    labels: list[str]
    png: bytes | None = None


@dataclass
class Explanation:
    """Why a score: `subject` (the item / query side) and, pairwise, `other`; either is None when that
    side's raw input is not available, and `note` says why."""

    score: float
    subject: Relevance | None
    other: Relevance | None
    evidence: list[CaseEvidence]
    png: bytes | None
    note: str

    @classmethod
    def from_pb(cls, message: pb.Explanation) -> "Explanation":
        return cls(
            score=float(message.score),
            subject=Relevance.from_pb(message.subject) if message.HasField("subject") else None,
            other=Relevance.from_pb(message.other) if message.HasField("other") else None,
            evidence=[CaseEvidence(e.case_id, float(e.score), Relevance.from_pb(e.relevance), list(e.labels),
                                   bytes(e.png) or None) for e in message.evidence],
            png=bytes(message.png) or None, note=message.note,
        )


@dataclass
class ExplainResult:
    explanation: Explanation
    model_version: str


def explanation_or_none(owner: pb.Hit | pb.LabelScore) -> Explanation | None:
    return Explanation.from_pb(owner.explanation) if owner.HasField("explanation") else None


@dataclass
class Hit:
    case_id: str
    patient_id: str
    modality: str
    score: float
    labels: list[str]
    metadata: dict[str, str]
    study_time: str
    explanation: Explanation | None = None   # with search(..., explain=...)

    @classmethod
    def from_pb(cls, hit: pb.Hit) -> "Hit":
        return cls(hit.case_id, hit.patient_id, PB_TO_MODALITY.get(hit.modality, ""), float(hit.score),
                   list(hit.labels), dict(hit.metadata), hit.study_time, explanation_or_none(hit))


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
    explanation: Explanation | None = None   # with classify(..., explain=...)


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
