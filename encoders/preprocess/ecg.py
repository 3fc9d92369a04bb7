"""ECG reading and preparation to the model's input contract.

One path for training, ingest and the gRPC request path:

    read_ecg(path)                    -> EcgSignal (signal [n_leads, n_samples] float32 mV, fs, lead_names, comments)
    decode_wfdb_bytes(header, signal) -> EcgSignal (the same, from the bytes of a request)
    prepare_ecg(signal, fs, lead_names, target_fs, n_samples) -> (float32 [12, n_samples] mV, bool [12] lead mask)

prepare_ecg, step by step (each step says why):
1. leads are mapped to STANDARD_LEADS by name (`leads.standard_lead`); non-standard channels (Frank
   vx/vy/vz, V3R, ...) are dropped, standard leads that are absent are zero and masked False;
2. per lead, short NaN gaps (<= MAX_GAP_S) are linearly interpolated; a lead with a longer gap or more
   than half NaN is masked (interpolating across seconds would invent beats); a flat lead
   (peak-to-peak < FLAT_MV) is masked, because devices write zeros for disconnected electrodes;
3. the centre of the record (plus a FILTER_MARGIN_S margin each side, so filter edge transients fall
   outside the kept window) is resampled to target_fs with a polyphase filter (anti-aliased);
4. a zero-phase Butterworth band-pass LOW_HZ..min(HIGH_HZ, 0.45 * target_fs) removes baseline wander
   and mains/EMG noise without shifting waves in time (the upper cut must stay below Nyquist);
5. fixed length: records longer than n_samples are centre-cropped, shorter ones are zero-padded at the
   END (so sample k is still k / target_fs seconds after the record start); `window_start_s` gives the
   crop offset so interval annotations can be shifted into the window;
6. amplitudes stay in mV: NO per-record amplitude normalisation (voltage is diagnostic, e.g. LVH).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from encoders.errors import InvalidInputError
from encoders.preprocess.leads import STANDARD_LEADS, standard_lead
from encoders.preprocess.wfdb_format import (
    INVALID, HeaderError, Unsupported, WfdbHeader, decode_digital, parse_header, to_physical,
)

LOW_HZ: float = 0.5           # baseline wander (respiration, movement) lives below ~0.5 Hz
HIGH_HZ: float = 40.0         # diagnostic ECG content for a 12-lead model; cuts 50/60 Hz mains
FILTER_ORDER: int = 2         # per direction; filtfilt doubles it (4th-order effective slopes)
FILTER_MARGIN_S: float = 1.0  # kept each side of the crop while filtering
MAX_GAP_S: float = 0.5        # longest NaN run we interpolate (shorter than one beat at 120 bpm)
MAX_NAN_FRACTION: float = 0.5
FLAT_MV: float = 1e-3         # 1 uV: below the resolution of any 12-lead device
MIN_DURATION_S: float = 2.0   # at least two beats at 60 bpm
MIN_FS: float = 50.0          # below this the QRS (10-40 Hz content) cannot be represented
MAX_FS: float = 20_000.0
# Median over leads of the 99th-percentile |amplitude|: real ECGs stay well below 20 mV; a value in
# the hundreds means the caller passed microvolts or ADC units instead of millivolts.
MAX_TYPICAL_MV: float = 20.0

__all__ = [
    "STANDARD_LEADS", "EcgSignal", "read_ecg", "decode_wfdb_bytes", "prepare_ecg", "window_start_s",
]


@dataclass
class EcgSignal:
    signal: np.ndarray                 # float32 [n_leads, n_samples], millivolts (NaN where invalid)
    fs: float                          # samples per second
    lead_names: list[str]              # as written in the record (map with leads.standard_lead)
    comments: list[str] = field(default_factory=list)  # header comment lines (age, sex, Dx, history)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs


def read_ecg(path: str | Path) -> EcgSignal:
    """Read a WFDB record (`.hea` + `.dat`, any format) or a PhysioNet/CinC `.mat` + `.hea` pair.

    `path` is the record path with or without extension (`records500/00000/00001_hr`, `A0001.mat`,
    `100.hea`).
    """
    base = _record_base(Path(path))
    header_path = base.with_name(base.name + ".hea")
    if not header_path.is_file():
        raise InvalidInputError(
            "ecg", f"no WFDB header {header_path}; an ECG needs its .hea file (gain, sampling rate, lead names)"
        )
    text = header_path.read_bytes().decode("utf-8", errors="replace")

    def load(name: str) -> bytes:
        file_path = base.parent / name
        if not file_path.is_file():
            raise InvalidInputError("ecg", f"signal file {file_path} is missing; copy it beside {header_path.name}")
        return file_path.read_bytes()

    return _decode_record(text, load, lambda: _read_with_wfdb(base), str(base))


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def decode_wfdb_bytes(header: bytes, signal: bytes | Mapping[str, bytes]) -> EcgSignal:
    """Decode a WFDB record (or CinC `.mat`) sent as bytes: the `.hea` text and its signal file.

    `signal` is the one signal file's bytes, or {file name: bytes} for a record spread over several
    files (PTB Diagnostic keeps the Frank leads in `.xyz`).
    """
    if isinstance(header, (bytes, bytearray)):
        try:
            text = bytes(header).decode("utf-8")
        except UnicodeDecodeError:
            text = bytes(header).decode("latin-1")
    else:
        text = str(header)
    parsed = _parse(text, "ecg.header")
    for name in (parsed.record_name, *parsed.file_names):
        if not _SAFE_NAME.match(name) or ".." in name:
            raise InvalidInputError("ecg.header", f"unsafe record or file name {name!r} in the header")
    if isinstance(signal, Mapping):
        files = {str(name): bytes(data) for name, data in signal.items()}
        missing = [name for name in parsed.file_names if name not in files]
        if missing:
            raise InvalidInputError("ecg.signal", f"the header refers to {missing}, which were not sent")
    else:
        if len(parsed.file_names) != 1:
            raise InvalidInputError(
                "ecg.header", f"the header refers to {len(parsed.file_names)} signal files {parsed.file_names}; "
                "send each file (a {name: bytes} mapping) or the samples instead"
            )
        files = {parsed.file_names[0]: bytes(signal)}
    if not all(files.get(name) for name in parsed.file_names):
        raise InvalidInputError("ecg.signal", "the signal file is empty")

    def fallback() -> EcgSignal:
        with tempfile.TemporaryDirectory(prefix="tribind-ecg-") as tmp:
            Path(tmp, parsed.record_name + ".hea").write_text(text)
            for name in parsed.file_names:
                Path(tmp, name).write_bytes(files[name])
            return _read_with_wfdb(Path(tmp, parsed.record_name))

    return _decode_record(text, lambda name: files[name], fallback, parsed.record_name)


def _parse(text: str, field_name: str) -> WfdbHeader:
    try:
        return parse_header(text)
    except HeaderError as exc:
        raise InvalidInputError(field_name, f"not a valid WFDB header ({exc})") from None
    except Unsupported as exc:
        raise InvalidInputError(field_name, f"unsupported WFDB record ({exc}); send a single-segment record") from None


def _decode_record(text: str, load, fallback, where: str) -> EcgSignal:
    """Header text + a file loader -> EcgSignal; WFDB features this reader lacks go to wfdb (fallback)."""
    try:
        header = parse_header(text)
    except Unsupported:
        return fallback()
    except HeaderError as exc:
        raise InvalidInputError("ecg", f"{where}: not a valid WFDB header ({exc})") from None
    if header.n_signals == 0 or not header.signals:
        raise InvalidInputError("ecg", f"{where}: the header describes no signals")
    if any(name.lower().endswith(".mat") for name in header.file_names):
        physical = _mat_signal(header, load)
    else:
        try:
            physical = to_physical(header, decode_digital(header, {name: load(name) for name in header.file_names}))
        except Unsupported:
            return fallback()
        except HeaderError as exc:
            raise InvalidInputError("ecg", f"{where}: {exc}") from None
    physical = physical * _unit_scale([s.units for s in header.signals], header.n_signals)[:, None]
    return EcgSignal(physical.astype(np.float32), float(header.fs), header.lead_names, header.comments)


def _read_with_wfdb(base: Path) -> EcgSignal:
    import wfdb

    try:
        record = wfdb.rdrecord(str(base), physical=True, return_res=64)
    except Exception as exc:  # wfdb raises plain Exception subclasses for bad records
        raise InvalidInputError("ecg", f"unreadable WFDB record {base}: {exc}") from None
    if getattr(record, "p_signal", None) is None:
        raise InvalidInputError("ecg", f"{base} is a multi-segment record; pass one segment's record")
    signal = np.asarray(record.p_signal, dtype=np.float64).T
    signal = signal * _unit_scale(record.units, len(record.sig_name))[:, None]
    return EcgSignal(signal.astype(np.float32), float(record.fs), [str(n) for n in record.sig_name],
                     [str(c) for c in (record.comments or [])])


def prepare_ecg(
    signal: np.ndarray,
    fs: float,
    lead_names: Sequence[str],
    target_fs: float,
    n_samples: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Map, clean, resample, filter and crop an ECG to float32 [12, n_samples] mV and a bool [12] lead mask."""
    array, fs, names = _validate(signal, fs, lead_names, target_fs, n_samples)
    rows = _map_leads(names)
    out = np.zeros((len(STANDARD_LEADS), n_samples), dtype=np.float32)
    mask = np.zeros(len(STANDARD_LEADS), dtype=bool)

    source_len = array.shape[1]
    duration = source_len / fs
    start_s = window_start_s(duration, target_fs, n_samples)
    # Work only on the kept window plus a margin: a 30-min Holter record is cut before resampling.
    first = max(0, int(np.floor((start_s - FILTER_MARGIN_S) * fs)))
    last = min(source_len, int(np.ceil((start_s + n_samples / target_fs + FILTER_MARGIN_S) * fs)) + 1)

    kept: list[tuple[int, np.ndarray]] = []
    for source_index, lead_index, sign in rows:
        cleaned = _clean_lead(array[source_index], fs)
        if cleaned is None:
            continue
        kept.append((lead_index, sign * cleaned[first:last]))
    if not kept:
        raise InvalidInputError(
            "ecg.samples",
            "no usable lead: every standard lead is mostly NaN, has a long gap, or is flat; check the recording",
        )
    block = np.stack([values for _, values in kept])
    _check_amplitude(block)
    resampled = _resample(block, fs, target_fs)
    filtered = _bandpass(resampled, target_fs)
    offset = int(round((start_s - first / fs) * target_fs))
    window = filtered[:, offset:offset + n_samples]
    for row, (lead_index, _) in enumerate(kept):
        out[lead_index, : window.shape[1]] = window[row]
        mask[lead_index] = True
    return out, mask


def window_start_s(duration_s: float, target_fs: float, n_samples: int) -> float:
    """Seconds from the record start to output sample 0 (centre crop; 0 when the record is padded)."""
    return max(0.0, (duration_s - n_samples / target_fs) / 2.0)


def _validate(signal, fs, lead_names, target_fs, n_samples) -> tuple[np.ndarray, float, list[str]]:
    if isinstance(lead_names, str) or not isinstance(lead_names, Sequence):
        raise InvalidInputError("ecg.lead_names", "expected a list of lead names such as ['I', 'II', 'V1']")
    names = [str(name) for name in lead_names]
    try:
        array = np.asarray(signal, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError("ecg.samples", "samples must be a numeric [n_leads, n_samples] array") from None
    if array.ndim != 2:
        raise InvalidInputError(
            "ecg.samples", f"expected a 2-D [n_leads, n_samples] array, got shape {array.shape}"
        )
    if array.shape[0] != len(names):
        hint = " (it looks transposed: pass [n_leads, n_samples])" if array.shape[1] == len(names) else ""
        raise InvalidInputError(
            "ecg.samples", f"shape {array.shape} does not match {len(names)} lead names{hint}"
        )
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise InvalidInputError("ecg.fs", f"sampling rate must be a number of Hz, got {fs!r}") from None
    if not np.isfinite(fs) or not MIN_FS <= fs <= MAX_FS:
        raise InvalidInputError("ecg.fs", f"sampling rate {fs} Hz is outside [{MIN_FS:g}, {MAX_FS:g}] Hz")
    if not (isinstance(n_samples, (int, np.integer)) and n_samples > 0):
        raise InvalidInputError("ecg.n_samples", f"n_samples must be a positive integer, got {n_samples!r}")
    if not (np.isfinite(target_fs) and MIN_FS <= float(target_fs) <= MAX_FS):
        raise InvalidInputError("ecg.target_fs", f"target rate {target_fs} Hz is outside [{MIN_FS:g}, {MAX_FS:g}]")
    if array.shape[1] / fs < MIN_DURATION_S:
        raise InvalidInputError(
            "ecg.samples",
            f"record is {array.shape[1] / fs:.2f} s long; at least {MIN_DURATION_S:g} s are needed",
        )
    if not np.isfinite(array).any():
        raise InvalidInputError("ecg.samples", "every sample is NaN or Inf; the record carries no signal")
    return array, fs, names


def _map_leads(names: list[str]) -> list[tuple[int, int, float]]:
    rows: list[tuple[int, int, float]] = []
    seen: dict[str, str] = {}
    for source_index, name in enumerate(names):
        lead, sign = standard_lead(name)
        if lead is None:
            continue
        if lead in seen:
            raise InvalidInputError(
                "ecg.lead_names", f"lead {lead} appears twice ({seen[lead]!r} and {name!r}); send each lead once"
            )
        seen[lead] = name
        rows.append((source_index, STANDARD_LEADS.index(lead), sign))
    if not rows:
        raise InvalidInputError(
            "ecg.lead_names",
            f"none of {names} is a standard lead; name them as {', '.join(STANDARD_LEADS)} (MLII counts as II)",
        )
    return rows


def _clean_lead(values: np.ndarray, fs: float) -> np.ndarray | None:
    """Interpolated copy of one lead, or None when the lead must be masked (see module docstring)."""
    bad = ~np.isfinite(values)
    if bad.any():
        if bad.mean() > MAX_NAN_FRACTION or _longest_run(bad) > MAX_GAP_S * fs:
            return None
        good = np.flatnonzero(~bad)
        values = values.copy()
        values[bad] = np.interp(np.flatnonzero(bad), good, values[good])
    if np.ptp(values) < FLAT_MV:
        return None
    return values


def _longest_run(flags: np.ndarray) -> int:
    padded = np.concatenate(([0], flags.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


def _check_amplitude(block: np.ndarray) -> None:
    typical = float(np.median(np.percentile(np.abs(block - np.median(block, axis=1, keepdims=True)), 99, axis=1)))
    if typical > MAX_TYPICAL_MV:
        raise InvalidInputError(
            "ecg.samples",
            f"typical amplitude is {typical:.0f} mV; ECG samples must be in millivolts "
            "(divide microvolts by 1000, or ADC units by the header gain)",
        )


def _resample(block: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    if abs(fs - target_fs) < 1e-9:
        return block
    from scipy.signal import resample_poly

    ratio = Fraction(float(target_fs) / fs).limit_denominator(1000)
    return resample_poly(block, ratio.numerator, ratio.denominator, axis=1, padtype="line")


def _bandpass(block: np.ndarray, fs: float) -> np.ndarray:
    from scipy.signal import sosfiltfilt

    sos = _bandpass_sos(float(fs))
    padlen = min(block.shape[1] - 1, 3 * (2 * len(sos) + 1))
    return sosfiltfilt(sos, block, axis=1, padlen=padlen)


@lru_cache(maxsize=16)
def _bandpass_sos(fs: float) -> np.ndarray:
    from scipy.signal import butter

    high = min(HIGH_HZ, 0.45 * fs)
    return butter(FILTER_ORDER, [LOW_HZ, high], btype="bandpass", fs=fs, output="sos")


def _record_base(path: Path) -> Path:
    if path.suffix.lower() in (".hea", ".dat", ".mat", ".xyz"):
        return path.with_suffix("")
    return path


def _unit_scale(units: Sequence[str] | None, n_leads: int) -> np.ndarray:
    scale = np.ones(n_leads, dtype=np.float64)
    for index, unit in enumerate(list(units or [])[:n_leads]):
        key = (unit or "mV").strip().lower().replace("μ", "u").replace("µ", "u")
        if key in ("uv", "microvolt", "microvolts"):
            scale[index] = 1e-3
        elif key in ("v", "volt", "volts"):
            scale[index] = 1e3
        elif key in ("nu", "", "mv", "millivolt", "millivolts"):
            scale[index] = 1.0  # "NU" = unspecified; WFDB's default physical unit is mV
    return scale


def _mat_signal(header: WfdbHeader, load) -> np.ndarray:
    """CinC-style .mat (MATLAB v4, variable `val`, ADC units) -> physical values via the header gain."""
    import io

    from scipy.io import loadmat

    if len(header.file_names) != 1:
        raise InvalidInputError("ecg", f"expected one .mat signal file, header lists {header.file_names}")
    (name,) = header.file_names
    try:
        content = loadmat(io.BytesIO(load(name)))
    except InvalidInputError:
        raise
    except Exception as exc:
        raise InvalidInputError("ecg", f"unreadable MATLAB file {name}: {exc}") from None
    if "val" not in content:
        keys = [key for key in content if not key.startswith("__")]
        raise InvalidInputError("ecg", f"{name} has no 'val' variable (found {keys})")
    raw = np.asarray(content["val"], dtype=np.float64)
    n_leads = header.n_signals
    if raw.ndim != 2 or n_leads not in raw.shape:
        raise InvalidInputError("ecg", f"{name} holds shape {raw.shape}, header says {n_leads} leads")
    if raw.shape[0] != n_leads:
        raw = raw.T
    gain = np.array([s.gain for s in header.signals], dtype=np.float64)[:, None]
    baseline = np.array([s.baseline for s in header.signals], dtype=np.float64)[:, None]
    physical = (raw - baseline) / gain
    physical[raw == INVALID["16"]] = np.nan
    return physical
