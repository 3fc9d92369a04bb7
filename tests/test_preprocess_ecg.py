"""read_ecg / decode_wfdb_bytes / prepare_ecg: formats, lead mapping, resampling, cleaning, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.errors import InvalidInputError
from encoders.preprocess.ecg import (
    STANDARD_LEADS,
    decode_wfdb_bytes,
    prepare_ecg,
    read_ecg,
    window_start_s,
)
from encoders.preprocess.leads import standard_lead


def _beats(fs: float, seconds: float, n_leads: int, amplitude_mv: float = 1.0) -> np.ndarray:
    """A crude 60 bpm ECG: narrow Gaussian R waves, lead k scaled by (k+1)/n so leads differ."""
    t = np.arange(int(fs * seconds)) / fs
    beat = np.exp(-(((t % 1.0) - 0.5) ** 2) / (2 * 0.015**2))
    return np.stack([amplitude_mv * (k + 1) / n_leads * beat for k in range(n_leads)]).astype(np.float64)


def write_cinc_record(folder, name: str = "A0001", fs: int = 500, seconds: float = 4.0) -> np.ndarray:
    """A PhysioNet/CinC 2020 record: MATLAB v4 `val` in ADC units (gain 1000/mV) and its .hea with # Dx."""
    from scipy.io import savemat

    physical = _beats(fs, seconds, 12)
    adc = np.round(physical * 1000).astype(np.int16)
    savemat(str(folder / f"{name}.mat"), {"val": adc}, format="4")
    lines = [f"{name} 12 {fs} {adc.shape[1]} 05-Feb-2020 11:39:16"]
    for lead, row in zip(STANDARD_LEADS, adc):
        lines.append(f"{name}.mat 16+24 1000/mV 16 0 {row[0]} {int(row.sum()) % 65536 - 32768} 0 {lead}")
    lines += ["#Age: 74", "#Sex: Male", "#Dx: 59118001,164889003", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return physical


def test_lead_name_spellings():
    assert standard_lead("I") == ("I", 1.0)
    assert standard_lead("i") == ("I", 1.0)
    assert standard_lead("lead I") == ("I", 1.0)
    assert standard_lead("AVR") == ("aVR", 1.0)
    assert standard_lead("-aVR") == ("aVR", -1.0)
    assert standard_lead("MLII") == ("II", 1.0)
    assert standard_lead("v5") == ("V5", 1.0)
    assert standard_lead("vx")[0] is None and standard_lead("V4R")[0] is None and standard_lead("ECG1")[0] is None


def test_any_order_and_naming_lands_in_standard_slots():
    fs = 250
    names = ["v6", "AVR", "lead II", "I", "vx"]
    signal = _beats(fs, 10, len(names))
    out, mask = prepare_ecg(signal, fs, names, target_fs=250, n_samples=2500)
    assert out.shape == (12, 2500) and out.dtype == np.float32 and mask.dtype == bool
    assert [STANDARD_LEADS[i] for i in np.flatnonzero(mask)] == ["I", "II", "aVR", "V6"]
    assert not out[~mask].any()
    # Amplitude order is preserved (no per-lead normalisation): v6 was the smallest, vx dropped.
    peaks = {lead: out[STANDARD_LEADS.index(lead)].max() for lead in ("V6", "aVR", "II", "I")}
    assert peaks["V6"] < peaks["aVR"] < peaks["II"] < peaks["I"]


def test_amplitude_stays_in_millivolts_and_baseline_is_removed():
    fs = 500
    signal = _beats(fs, 10, 12, amplitude_mv=2.0)
    t = np.arange(signal.shape[1]) / fs
    wander = 0.8 * np.sin(2 * np.pi * 0.15 * t)
    out, _ = prepare_ecg(signal + wander, fs, STANDARD_LEADS, 500, 5000)
    clean, _ = prepare_ecg(signal, fs, STANDARD_LEADS, 500, 5000)
    lead_v6 = out[11]  # V6 carries the full 2 mV in _beats
    assert abs(np.median(lead_v6)) < 0.1                      # baseline wander gone
    np.testing.assert_allclose(out[:, 500:-500], clean[:, 500:-500], atol=0.1)
    # A 2 mV R wave stays roughly 2 mV (band-pass trims the peak a little, nothing rescales it).
    assert 1.3 < lead_v6.max() < 2.2
    double, _ = prepare_ecg(2 * signal, fs, STANDARD_LEADS, 500, 5000)
    np.testing.assert_allclose(double, 2 * clean, rtol=1e-4, atol=1e-5)


def test_resampling_keeps_timing():
    for fs in (100, 257, 360, 1000):
        out, _ = prepare_ecg(_beats(fs, 10, 12), fs, STANDARD_LEADS, 500, 5000)
        peaks = np.flatnonzero((out[0] > 0.5 * out[0].max()) & (out[0] >= np.roll(out[0], 1)) & (out[0] >= np.roll(out[0], -1)))
        assert len(peaks) == 10, fs
        assert np.allclose(np.diff(peaks), 500, atol=2), fs


def test_centre_crop_and_end_padding():
    fs = 100
    long_record = _beats(fs, 30, 12)
    out, _ = prepare_ecg(long_record, fs, STANDARD_LEADS, 100, 1000)
    assert out.shape == (12, 1000)
    assert window_start_s(30.0, 100, 1000) == pytest.approx(10.0)
    short, _ = prepare_ecg(_beats(fs, 4, 12), fs, STANDARD_LEADS, 100, 1000)
    assert short[:, :400].any() and not short[:, 400:].any()
    assert window_start_s(4.0, 100, 1000) == 0.0


def test_nan_gaps_interpolated_or_lead_masked():
    fs = 500
    signal = _beats(fs, 10, 12)
    signal[0, 1000:1050] = np.nan         # 0.1 s gap: interpolated
    signal[1, 1000:2500] = np.nan         # 3 s gap: lead masked
    signal[2, ::2] = np.nan               # half of the samples, every other: fine to interpolate
    signal[3, :] = 0.0                    # flat: disconnected electrode
    signal[4, :4000] = np.inf             # mostly invalid
    out, mask = prepare_ecg(signal, fs, STANDARD_LEADS, 500, 5000)
    assert np.isfinite(out).all()
    assert mask.tolist() == [True, False, True, False, False] + [True] * 7


@pytest.mark.parametrize(
    "signal, fs, names, field",
    [
        (np.zeros(5000), 500, ["I"], "ecg.samples"),                        # 1-D
        (np.zeros((5000, 12)), 500, list(STANDARD_LEADS), "ecg.samples"),   # transposed
        (_beats(500, 10, 2), 0, ["I", "II"], "ecg.fs"),
        (_beats(500, 10, 2), -500, ["I", "II"], "ecg.fs"),
        (_beats(500, 10, 2), 1e7, ["I", "II"], "ecg.fs"),
        (_beats(500, 10, 2), float("nan"), ["I", "II"], "ecg.fs"),
        (_beats(500, 10, 2), 500, ["I", "i"], "ecg.lead_names"),           # duplicated
        (_beats(500, 10, 2), 500, ["vx", "foo"], "ecg.lead_names"),        # unknown only
        (np.full((2, 5000), np.nan), 500, ["I", "II"], "ecg.samples"),
        (_beats(500, 1, 2), 500, ["I", "II"], "ecg.samples"),              # 1 s: too short
        (_beats(500, 10, 2) * 1000, 500, ["I", "II"], "ecg.samples"),      # microvolts
    ],
)
def test_bad_input_names_the_field(signal, fs, names, field):
    with pytest.raises(InvalidInputError) as info:
        prepare_ecg(signal, fs, names, 500, 5000)
    assert info.value.field == field


def test_cinc_mat_record_is_converted_to_millivolts(tmp_path):
    physical = write_cinc_record(tmp_path)
    for path in (tmp_path / "A0001", tmp_path / "A0001.mat", str(tmp_path / "A0001.hea")):
        ecg = read_ecg(path)
        assert ecg.fs == 500 and ecg.lead_names == list(STANDARD_LEADS)
        np.testing.assert_allclose(ecg.signal, physical, atol=1e-3)
        assert "Dx: 59118001,164889003" in [c.strip() for c in ecg.comments]


def test_decode_wfdb_bytes_matches_read_ecg(tmp_path):
    import wfdb

    signal = _beats(250, 5, 3)
    wfdb.wrsamp("rec1", fs=250, units=["mV"] * 3, sig_name=["I", "II", "V1"], p_signal=signal.T, fmt=["212"] * 3,
                write_dir=str(tmp_path), comments=["age: 60"])
    from_file = read_ecg(tmp_path / "rec1")
    from_bytes = decode_wfdb_bytes((tmp_path / "rec1.hea").read_bytes(), (tmp_path / "rec1.dat").read_bytes())
    np.testing.assert_allclose(from_bytes.signal, from_file.signal)
    np.testing.assert_allclose(from_file.signal, signal, atol=0.01)
    assert from_bytes.comments == ["age: 60"]
    with pytest.raises(InvalidInputError):
        decode_wfdb_bytes(b"../evil 1 250 100\n../evil.dat 16 200 16 0 0 0 0 I\n", b"\x00" * 200)
    with pytest.raises(InvalidInputError):
        decode_wfdb_bytes(b"", b"")


def test_missing_header_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInputError):
        read_ecg(tmp_path / "nothing")


@pytest.mark.parametrize(
    "relative, n_leads, fs, expected_mask",
    [
        ("ptbxl/records100/00000/00001_lr", 12, 100, [True] * 12),
        ("ptbxl/records500/00000/00001_hr", 12, 500, [True] * 12),
        ("physionet_samples/s0010_re", 15, 1000, [True] * 12),         # Frank vx/vy/vz dropped
        ("physionet_samples/100", 2, 360, [False, True] + [False] * 8 + [True, False]),  # MLII->II, V5
    ],
)
def test_real_records(shared_data, relative, n_leads, fs, expected_mask):
    ecg = read_ecg(shared_data / relative)
    assert ecg.signal.shape[0] == n_leads and ecg.fs == fs
    out, mask = prepare_ecg(ecg.signal, ecg.fs, ecg.lead_names, 500, 5000)
    assert mask.tolist() == expected_mask
    assert np.isfinite(out).all()
    # Real 12-lead ECGs peak between a few tenths of a mV and a few mV.
    assert 0.2 < np.abs(out[mask]).max() < 10.0


@pytest.mark.parametrize("fmt", ["16", "212", "80", "24", "32"])
@pytest.mark.parametrize("n", [1001, 1000])  # 212 packs two samples in 3 bytes: odd counts end on 2 bytes
def test_fast_wfdb_reader_matches_wfdb_package(tmp_path, fmt, n):
    import wfdb

    from encoders.preprocess.ecg import _read_with_wfdb

    rng = np.random.default_rng(0)
    signal = rng.normal(size=(n, 3)) * 0.5
    signal[5, 1] = np.nan
    gains = [20, 10, 5] if fmt == "80" else [200, 100, 50]
    wfdb.wrsamp("r", fs=250, units=["mV", "uV", "mV"], sig_name=["I", "V2", "aVF"], p_signal=signal, fmt=[fmt] * 3,
                adc_gain=gains, baseline=[0, 10, -5], write_dir=str(tmp_path), comments=["age: 50"])
    fast = read_ecg(tmp_path / "r")
    reference = _read_with_wfdb(tmp_path / "r")
    np.testing.assert_array_equal(fast.signal, reference.signal)   # NaN where the invalid code was stored
    assert fast.lead_names == reference.lead_names and fast.comments == ["age: 50"]
    assert np.isnan(fast.signal[1, 5]) and fast.signal.shape == (3, n)


def test_fast_reader_on_multi_file_and_212_records(shared_data):
    from encoders.preprocess.ecg import _read_with_wfdb

    folder = shared_data / "physionet_samples"
    files = {name: (folder / name).read_bytes() for name in ("s0010_re.dat", "s0010_re.xyz")}
    sent = decode_wfdb_bytes((folder / "s0010_re.hea").read_bytes(), files)
    assert sent.signal.shape == (15, 38400)
    with pytest.raises(InvalidInputError, match="signal files"):
        decode_wfdb_bytes((folder / "s0010_re.hea").read_bytes(), files["s0010_re.dat"])

    for name in ("s0010_re", "100"):   # .dat + .xyz files; format 212 with comments around blank lines
        fast = read_ecg(shared_data / "physionet_samples" / name)
        reference = _read_with_wfdb(shared_data / "physionet_samples" / name)
        np.testing.assert_array_equal(fast.signal, reference.signal)
        assert fast.comments == reference.comments


def test_unsupported_wfdb_features_fall_back_to_wfdb(tmp_path, monkeypatch):
    import wfdb

    import encoders.preprocess.ecg as ecg_module
    from encoders.preprocess.wfdb_format import Unsupported

    signal = _beats(250, 3, 2)
    wfdb.wrsamp("rec", fs=250, units=["mV"] * 2, sig_name=["I", "II"], p_signal=signal.T, fmt=["16"] * 2,
                write_dir=str(tmp_path))

    def unsupported(*_):
        raise Unsupported("format 310")  # stands for any format the fast reader leaves to wfdb

    monkeypatch.setattr(ecg_module, "decode_digital", unsupported)
    for decoded in (read_ecg(tmp_path / "rec"),
                    decode_wfdb_bytes((tmp_path / "rec.hea").read_bytes(), (tmp_path / "rec.dat").read_bytes())):
        np.testing.assert_allclose(decoded.signal, signal, atol=0.01)
        assert decoded.lead_names == ["I", "II"]
