"""A fast reader for the WFDB header and the common signal formats (16, 61, 80, 212, 24, 32).

Why not `wfdb.rdrecord` everywhere: wfdb 4.3 parses each header field through a pandas lookup, which
costs ~40 ms per 12-lead record, 20x the decoding itself; ingest and training read tens of thousands
of records and the service reads one per request. Anything this module does not handle (multi-
segment records, several samples per frame, skew, formats 8/310/311/FLAC) raises `Unsupported`, and
the caller falls back to wfdb. Spec: https://physionet.org/physiotools/wag/header-5.htm, signal-5.htm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_FS = 250.0       # the WFDB default when a header gives no sampling frequency
DEFAULT_GAIN = 200.0     # ADC units per physical unit when the header gives none (or 0)
# The "no sample" code of each format: the most negative value it can store.
INVALID = {"16": -32768, "61": -32768, "80": -128, "212": -2048, "24": -(2**23), "32": -(2**31)}
SUPPORTED = tuple(INVALID)

_FORMAT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+0-9.eE]+)(?:\(([-+0-9]+)\))?(?:/(\S+))?$")


class Unsupported(Exception):
    """A valid WFDB feature this reader leaves to the wfdb package."""


class HeaderError(ValueError):
    """A header that is not valid WFDB."""


@dataclass
class SignalSpec:
    file_name: str
    fmt: str
    byte_offset: int
    gain: float
    baseline: int
    units: str
    adc_zero: int
    description: str


@dataclass
class WfdbHeader:
    record_name: str
    n_signals: int
    fs: float
    n_samples: int | None
    signals: list[SignalSpec]
    comments: list[str] = field(default_factory=list)

    @property
    def lead_names(self) -> list[str]:
        return [s.description for s in self.signals]

    @property
    def file_names(self) -> list[str]:
        return list(dict.fromkeys(s.file_name for s in self.signals))


def parse_header(text: str) -> WfdbHeader:
    """Parse `.hea` text (comments may precede, follow or sit between the lines; blank lines are ignored)."""
    comments: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
            continue
        lines.append(stripped)
    if not lines:
        raise HeaderError("no record line")
    record = lines[0].split()
    name = record[0]
    if "/" in name:
        raise Unsupported("multi-segment record")
    try:
        n_signals = int(record[1]) if len(record) > 1 else 0
        fs = float(record[2].split("/")[0].split("(")[0]) if len(record) > 2 else DEFAULT_FS
        n_samples = int(record[3]) if len(record) > 3 else None
    except ValueError as exc:
        raise HeaderError(f"bad record line {lines[0]!r}: {exc}") from None
    if len(lines) - 1 < n_signals:
        raise HeaderError(f"header announces {n_signals} signals but has {len(lines) - 1} signal lines")
    signals = [_parse_signal(line, index) for index, line in enumerate(lines[1:1 + n_signals])]
    return WfdbHeader(name, n_signals, fs, n_samples or None, signals, comments)


def _parse_signal(line: str, index: int) -> SignalSpec:
    fields = line.split()
    if len(fields) < 2:
        raise HeaderError(f"signal line {line!r} needs a file name and a format")
    match = _FORMAT.match(fields[1])
    if not match:
        raise HeaderError(f"bad format field {fields[1]!r}")
    fmt, frames, skew, offset = match.groups()
    if frames not in (None, "1") or skew not in (None, "0"):
        raise Unsupported("several samples per frame or skew")
    gain, baseline, units = DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        gain_match = _GAIN.match(fields[2])
        if not gain_match:
            raise HeaderError(f"bad gain field {fields[2]!r}")
        gain = float(gain_match.group(1)) or DEFAULT_GAIN
        baseline = int(gain_match.group(2)) if gain_match.group(2) else None
        units = gain_match.group(3) or "mV"
    adc_zero = int(fields[4]) if len(fields) > 4 else 0
    description = " ".join(fields[8:]) if len(fields) > 8 else f"sig{index}"
    return SignalSpec(fields[0], fmt, int(offset or 0), gain, adc_zero if baseline is None else baseline,
                      units, adc_zero, description)


def decode_digital(header: WfdbHeader, files: dict[str, bytes]) -> np.ndarray:
    """Digital samples int32 [n_signals, n_samples] from the signal files' bytes (invalid samples kept)."""
    out: list[np.ndarray | None] = [None] * header.n_signals
    for file_name in header.file_names:
        members = [i for i, s in enumerate(header.signals) if s.file_name == file_name]
        specs = [header.signals[i] for i in members]
        fmt = specs[0].fmt
        if fmt not in SUPPORTED or any(s.fmt != fmt for s in specs):
            raise Unsupported(f"format {fmt}")
        if file_name not in files:
            raise HeaderError(f"signal file {file_name} is missing")
        data = memoryview(files[file_name])[specs[0].byte_offset:]
        stream = _unpack(bytes(data), fmt)
        frames = stream.size // len(members)
        if header.n_samples is not None:
            if frames < header.n_samples:
                raise HeaderError(f"{file_name} holds {frames} samples per signal, header says {header.n_samples}")
            frames = header.n_samples
        block = stream[: frames * len(members)].reshape(frames, len(members)).T
        for row, index in enumerate(members):
            out[index] = block[row]
    lengths = {len(x) for x in out if x is not None}
    if len(lengths) != 1:
        raise HeaderError(f"signal files disagree on the number of samples: {sorted(lengths)}")
    return np.stack(out)


def to_physical(header: WfdbHeader, digital: np.ndarray) -> np.ndarray:
    """(digital - baseline) / gain, float64, NaN where the format's invalid code was stored."""
    gain = np.array([s.gain for s in header.signals], dtype=np.float64)[:, None]
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)[:, None]
    physical = (digital.astype(np.float64) - baseline) / gain
    invalid = np.array([INVALID.get(s.fmt, np.iinfo(np.int64).min) for s in header.signals])[:, None]
    physical[digital == invalid] = np.nan
    return physical


def _unpack(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "16":
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int32)
    if fmt == "61":
        return np.frombuffer(data[: len(data) // 2 * 2], dtype=">i2").astype(np.int32)
    if fmt == "32":
        return np.frombuffer(data[: len(data) // 4 * 4], dtype="<i4").astype(np.int32)
    if fmt == "80":
        return np.frombuffer(data, dtype=np.uint8).astype(np.int32) - 128
    if fmt == "24":
        raw = np.frombuffer(data[: len(data) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        return np.where(values >= 2**23, values - 2**24, values)
    if fmt == "212":
        # Two 12-bit samples in three bytes: s0 = b0 + low nibble of b1 << 8, s1 = b2 + high nibble of b1 << 4.
        if len(data) % 3:
            data = data + b"\x00" * (3 - len(data) % 3)  # an odd sample count ends on 2 bytes
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        first = raw[:, 0] | ((raw[:, 1] & 0x0F) << 8)
        second = raw[:, 2] | ((raw[:, 1] & 0xF0) << 4)
        values = np.stack([first, second], axis=1).reshape(-1)
        return np.where(values >= 2048, values - 4096, values)
    raise Unsupported(f"format {fmt}")
