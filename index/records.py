"""The value types of the case store API: what goes in (`Case`, `SearchFilter`) and what comes out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


@dataclass(frozen=True)
class Embedding:
    """One stored vector: float32 [dim], L2-normalised, stamped with the model that produced it."""

    vector: np.ndarray
    model_version: str


@dataclass(frozen=True)
class RawInput:
    """The raw input a vector was computed from, kept so `tribind reindex` can re-embed without the client.

    media_type names the encoding, e.g. "image/png", "application/dicom", "application/x-npz"
    (ECG: arrays `signal` [leads, samples] mV, `fs`, `lead_names`), "text/plain; charset=utf-8".
    """

    data: bytes
    media_type: str


@dataclass
class Case:
    """A case as upserted and as returned by `CaseStore.get`."""

    case_id: str
    patient_id: str
    study_time: str | None = None                # ISO 8601; naive times are taken as UTC
    labels: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    vectors: dict[str, Embedding] = field(default_factory=dict)   # modality -> Embedding
    raw: dict[str, RawInput] = field(default_factory=dict)        # modality -> RawInput (optional)


@dataclass(frozen=True)
class SearchFilter:
    """Conditions a hit's case must meet; all given conditions must hold (AND).

    Time bounds are ISO 8601: `time_from` inclusive, `time_to` exclusive; a case without a study time
    never matches a time bound.
    """

    labels_any: tuple[str, ...] = ()
    labels_all: tuple[str, ...] = ()
    labels_none: tuple[str, ...] = ()
    patient_in: tuple[str, ...] = ()
    patient_not_in: tuple[str, ...] = ()
    metadata_equals: Mapping[str, str] = field(default_factory=dict)
    time_from: str | None = None
    time_to: str | None = None
    exclude_case_ids: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (
            self.labels_any or self.labels_all or self.labels_none or self.patient_in
            or self.patient_not_in or self.metadata_equals or self.time_from or self.time_to
            or self.exclude_case_ids
        )


@dataclass(frozen=True)
class Hit:
    case_id: str
    patient_id: str
    modality: str
    score: float                                  # inner product of unit vectors = cosine
    labels: tuple[str, ...]
    metadata: dict[str, str]
    study_time: str | None


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    plan: str              # how it was answered: "<kind>", "<kind>+postfilter", "exact-subset", "<kind>+selector"
    selected: int | None   # rows the filter selected, when the plan listed them (exact-subset, selector)


@dataclass(frozen=True)
class ModalityStats:
    vectors: int                        # stored vectors of the store's model_version
    indexed: int                        # vectors in the FAISS index (lags `vectors` only mid-write)
    index_kind: str                     # "flat" | "ivf" | "hnsw" | "empty"
    stale: dict[str, int]               # other model_version -> count: these need `tribind reindex`


@dataclass(frozen=True)
class StoreStats:
    cases: int
    patients: int
    model_version: str
    data_dir: str
    modalities: dict[str, ModalityStats]


@dataclass(frozen=True)
class StaleVector:
    """A stored vector of another model_version, with what is needed to re-embed it."""

    case_id: str
    modality: str
    model_version: str
    raw: RawInput | None
