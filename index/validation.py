"""Checks on every request before anything is mutated.

Vectors must already be L2-normalised (|norm - 1| <= NORM_TOLERANCE): the encoders always emit unit
vectors, so a vector that is not one is almost certainly the wrong tensor (pre-projection features,
an un-normalised export) and silently normalising it would hide that bug. We reject, and say how to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from index.errors import InvalidRequest, VersionMismatch
from index.records import MODALITIES, Case, Embedding, RawInput, SearchFilter

NORM_TOLERANCE = 1e-3
REINDEX_HINT = (
    "re-embed the stored cases with the loaded model: run `tribind reindex --server HOST:PORT` against the "
    "running server (it re-encodes each case from its stored raw input), or open the store with the model that made them"
)


@dataclass(frozen=True)
class ValidCase:
    """A case after validation: vectors as float32 C-contiguous arrays, time parsed."""

    case: Case
    study_ts: float | None
    vectors: dict[str, np.ndarray]


def check_modality(field: str, modality: object) -> str:
    if modality not in MODALITIES:
        raise InvalidRequest(field, f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    return modality  # type: ignore[return-value]


def check_vector(field: str, vector: object, dim: int) -> np.ndarray:
    """A float32 [dim] unit vector, or InvalidRequest saying what is wrong with it."""
    # Fast path (bulk ingest validates a million of these): a NaN/Inf makes the dot product non-finite,
    # so one dot decides; anything unusual takes the slow path below, which names the problem.
    if type(vector) is np.ndarray and vector.dtype == np.float32 and vector.shape == (dim,):
        norm_sq = float(np.dot(vector, vector))
        if math.isfinite(norm_sq) and abs(math.sqrt(norm_sq) - 1.0) <= NORM_TOLERANCE:
            return vector if vector.flags.c_contiguous else np.ascontiguousarray(vector)
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidRequest(field, "is not a numeric vector; send a float32 array of the embedding") from None
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (dim,):
        raise InvalidRequest(field, f"has shape {array.shape}, expected ({dim},): send the model's {dim}-d embedding")
    if not np.all(np.isfinite(array)):
        raise InvalidRequest(field, "contains NaN or Inf; re-encode the input")
    norm = float(np.linalg.norm(array))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        raise InvalidRequest(
            field, f"has L2 norm {norm:.6g}, expected 1 (±{NORM_TOLERANCE}); send the L2-normalised embedding v/||v||"
        )
    return np.ascontiguousarray(array)


def parse_time(field: str, value: object) -> float | None:
    """ISO 8601 -> UTC epoch seconds; naive times are taken as UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be an ISO 8601 string like 2180-07-23T12:30:00, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(field, f"{value!r} is not ISO 8601; use e.g. 2180-07-23T12:30:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _check_str(field: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidRequest(field, "must not be empty")
    return value


def _check_str_list(field: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidRequest(field, "must be a list of strings")
    return tuple(_check_str(f"{field}[{i}]", v) for i, v in enumerate(values))


def _check_metadata(field: str, metadata: object) -> dict[str, str]:
    if not isinstance(metadata, Mapping):
        raise InvalidRequest(field, "must be a map of string to string")
    for key, value in metadata.items():
        _check_str(f"{field}", key)
        _check_str(f"{field}.{key}", value, allow_empty=True)
    return dict(metadata)


def validate_case(field: str, case: object, dim: int, model_version: str) -> ValidCase:
    if not isinstance(case, Case):
        raise InvalidRequest(field, f"must be an index.Case, got {type(case).__name__}")
    _check_str(f"{field}.case_id", case.case_id)
    _check_str(f"{field}.patient_id", case.patient_id)
    study_ts = parse_time(f"{field}.study_time", case.study_time)
    labels = _check_str_list(f"{field}.labels", case.labels)
    metadata = _check_metadata(f"{field}.metadata", case.metadata)
    if not isinstance(case.vectors, Mapping):
        raise InvalidRequest(f"{field}.vectors", "must be a map of modality to index.Embedding")
    vectors: dict[str, np.ndarray] = {}
    for modality, embedding in case.vectors.items():
        vfield = f"{field}.vectors.{modality}"
        check_modality(vfield, modality)
        if not isinstance(embedding, Embedding):
            raise InvalidRequest(vfield, f"must be an index.Embedding(vector, model_version), got {type(embedding).__name__}")
        _check_str(f"{vfield}.model_version", embedding.model_version)
        if embedding.model_version != model_version:
            raise VersionMismatch(model_version, embedding.model_version,
                                  f"{vfield} was embedded by another model; embed it with the loaded model. {REINDEX_HINT}")
        vectors[modality] = check_vector(vfield, embedding.vector, dim)
    if not isinstance(case.raw, Mapping):
        raise InvalidRequest(f"{field}.raw", "must be a map of modality to index.RawInput")
    for modality, raw in case.raw.items():
        rfield = f"{field}.raw.{modality}"
        check_modality(rfield, modality)
        if not isinstance(raw, RawInput) or not isinstance(raw.data, (bytes, bytearray, memoryview)):
            raise InvalidRequest(rfield, "must be an index.RawInput(data: bytes, media_type: str)")
        _check_str(f"{rfield}.media_type", raw.media_type)
    clean = Case(case.case_id, case.patient_id, case.study_time or None, labels, metadata, case.vectors, case.raw)
    return ValidCase(clean, study_ts, vectors)


def validate_batch(cases: Sequence[Case], dim: int, model_version: str) -> list[ValidCase]:
    """Validate a whole upsert batch; the first bad field raises, naming it like `cases[3].vectors.ecg`."""
    if isinstance(cases, (Case, str, bytes)) or not isinstance(cases, Sequence):
        raise InvalidRequest("cases", "must be a list of index.Case")
    seen: dict[str, int] = {}
    valid = []
    for i, case in enumerate(cases):
        item = validate_case(f"cases[{i}]", case, dim, model_version)
        first = seen.setdefault(item.case.case_id, i)
        if first != i:
            raise InvalidRequest(f"cases[{i}].case_id",
                                 f"duplicates cases[{first}] ({item.case.case_id!r}); send each case once per batch")
        valid.append(item)
    return valid


def validate_filter(search_filter: SearchFilter | None) -> SearchFilter | None:
    if search_filter is None:
        return None
    if not isinstance(search_filter, SearchFilter):
        raise InvalidRequest("filter", f"must be an index.SearchFilter, got {type(search_filter).__name__}")
    for name in ("labels_any", "labels_all", "labels_none", "patient_in", "patient_not_in", "exclude_case_ids"):
        _check_str_list(f"filter.{name}", getattr(search_filter, name))
    _check_metadata("filter.metadata_equals", search_filter.metadata_equals)
    start = parse_time("filter.time_from", search_filter.time_from)
    end = parse_time("filter.time_to", search_filter.time_to)
    if start is not None and end is not None and end <= start:
        raise InvalidRequest("filter.time_to", "must be later than filter.time_from")
    return None if search_filter.is_empty() else search_filter


def validate_paging(k: object, offset: object, score_threshold: object, max_k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise InvalidRequest("k", f"must be an integer in 1..{max_k}, got {k!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= 100 * max_k:
        raise InvalidRequest("offset", f"must be an integer in 0..{100 * max_k}, got {offset!r}")
    if score_threshold is not None:
        if not isinstance(score_threshold, (int, float)) or not math.isfinite(score_threshold):
            raise InvalidRequest("score_threshold", f"must be a finite number (cosine in [-1, 1]), got {score_threshold!r}")
