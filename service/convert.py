"""Protobuf messages <-> numpy arrays and plain values, with the request checks that belong to the wire format.

What the encoders check themselves (decodable image, usable ECG rate/leads/values) stays in
`encoders.preprocess`; this module checks what only the wire format can get wrong (a sample count that
does not match the declared shape, a modality left unspecified, a vector of the wrong width).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

from protos.tribind.v1 import tribind_pb2 as pb
from service.errors import invalid
from service.modalities import MODALITY_TO_PB, PB_TO_MODALITY


def modality_name(value: int, field: str) -> str:
    """The modality string of an enum value; unspecified or unknown values are a caller error."""
    name = PB_TO_MODALITY.get(value)
    if name is None:
        raise invalid(field, "set a modality: MODALITY_XRAY, MODALITY_ECG or MODALITY_TEXT")
    return name


def modality_names(values: list[int], field: str, default_all: bool = True) -> list[str]:
    if not values and default_all:
        return list(MODALITY_TO_PB)
    names = []
    for i, value in enumerate(values):
        name = modality_name(value, f"{field}[{i}]")
        if name not in names:
            names.append(name)
    return names


def item_modality(item: pb.Item, field: str) -> str:
    kind = item.WhichOneof("kind")
    if kind is None:
        raise invalid(field, "the item is empty: set exactly one of xray, ecg or text")
    return kind


def ecg_signal_to_array(msg: pb.EcgSignal, field: str) -> tuple[np.ndarray, float, list[str]]:
    """(signal [n_leads, n_samples] float32 mV, sampling rate in Hz, lead names) of an EcgSignal."""
    n_leads, n_samples = int(msg.n_leads), int(msg.n_samples)
    if n_leads < 1 or n_samples < 1:
        raise invalid(f"{field}.n_leads", f"the shape is {n_leads} x {n_samples}; give n_leads and n_samples, both >= 1")
    if len(msg.samples) != n_leads * n_samples:
        raise invalid(
            f"{field}.samples",
            f"{len(msg.samples)} values do not fill the declared shape {n_leads} leads x {n_samples} samples "
            f"(= {n_leads * n_samples}); send the samples row-major, lead by lead",
        )
    if len(msg.lead_names) != n_leads:
        raise invalid(f"{field}.lead_names", f"{len(msg.lead_names)} lead names for {n_leads} leads; name every lead")
    rate = float(msg.sampling_rate_hz)
    if not math.isfinite(rate) or rate <= 0:
        raise invalid(f"{field}.sampling_rate_hz", f"{rate} is not a sampling rate; give the rate in Hz (> 0)")
    signal = np.asarray(msg.samples, dtype=np.float32).reshape(n_leads, n_samples)
    if not np.isfinite(signal).all():
        raise invalid(f"{field}.samples", "contains NaN or Inf; fill or drop the broken leads before sending")
    return signal, rate, list(msg.lead_names)


def vector_to_array(msg: pb.Vector, dim: int, field: str) -> np.ndarray:
    """A client vector as float32 [dim], L2-normalised (scores are cosines whatever the client sent)."""
    values = np.asarray(msg.values, dtype=np.float32)
    if values.shape[0] != dim:
        raise invalid(f"{field}.values", f"{values.shape[0]} values; the served model's vectors have {dim}")
    if not np.isfinite(values).all():
        raise invalid(f"{field}.values", "contains NaN or Inf")
    norm = float(np.linalg.norm(values))
    if norm == 0.0:
        raise invalid(f"{field}.values", "is the zero vector, which has no direction to search")
    return values / norm


def array_to_vector(values: np.ndarray, modality: str, model_version: str) -> pb.Vector:
    return pb.Vector(
        modality=MODALITY_TO_PB[modality],
        values=np.asarray(values, dtype=np.float32).tolist(),
        model_version=model_version,
    )


def parse_time(value: str, field: str) -> datetime | None:
    """ISO 8601 to an aware datetime (naive times are taken as UTC); '' is None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(field, f"{value!r} is not an ISO 8601 time; write e.g. 2180-07-23T12:30:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed
