"""Simple ECG measurements taken on the signal alone, to check that each condition is really there.

These are the textbook fiducial measurements (R-peak detection on the spatial velocity, a median beat,
QRS onset/offset by a velocity threshold, ST level at J + 60 ms against the PR baseline), good enough to
verify phantom ECGs and to sanity-check explanations; not a clinical-grade delineator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, filtfilt, find_peaks


@dataclass
class EcgMeasurements:
    heart_rate: float                 # bpm
    rr_s: np.ndarray                  # successive RR intervals
    qrs_ms: float
    pr_ms: float | None               # P peak to QRS onset + half the P width; None when no P is found
    st_mv: np.ndarray                 # [12] ST level at J + 60 ms relative to the PR segment
    t_mv: np.ndarray                  # [12] T-wave level (mean 40-70 % of QT window) relative to the PR segment
    median_beat: np.ndarray           # [12, n] from 400 ms before to 600 ms after the QRS onset

    @property
    def rr_irregularity(self) -> float:
        """RMSSD / mean RR: ~0.02 for sinus rhythm, > 0.1 in atrial fibrillation."""
        if self.rr_s.size < 3:
            return 0.0
        return float(np.sqrt(np.mean(np.diff(self.rr_s) ** 2)) / np.mean(self.rr_s))


def measure_ecg(signal: np.ndarray, fs: float) -> EcgMeasurements:
    """Measure a [12, n] mV signal (standard lead order)."""
    b, a = butter(2, [0.5 / (fs / 2), 40 / (fs / 2)], btype="band")
    x = filtfilt(b, a, signal.astype(np.float64), axis=1)
    # Detection runs on 8-40 Hz, where QRS energy is and T waves (< 8 Hz) are not.
    bd, ad = butter(2, [8 / (fs / 2), 40 / (fs / 2)], btype="band")
    xd = filtfilt(bd, ad, signal.astype(np.float64), axis=1)
    vel = np.sqrt((np.diff(xd, axis=1) ** 2).sum(axis=0)) * fs
    k = max(1, int(0.008 * fs))
    vel = np.convolve(vel, np.ones(k) / k, mode="same")
    peaks, _ = find_peaks(vel, height=0.45 * np.percentile(vel, 99.5), distance=int(0.3 * fs))
    rr = np.diff(peaks) / fs
    pre, post = int(0.4 * fs), int(0.6 * fs)
    keep = [p for p in peaks if p - pre >= 0 and p + post <= x.shape[1]]
    beats = np.stack([x[:, p - pre:p + post] for p in keep])
    med = np.median(beats, axis=0)
    # Velocity of the median beat: beat-to-beat noise is gone, slow QRS tails (bundle branch block)
    # stay above a low threshold.
    v = np.sqrt((np.diff(med, axis=1) ** 2).sum(axis=0)) * fs
    v = np.convolve(v, np.ones(k) / k, mode="same")
    centre = pre - int(0.05 * fs) + int(np.argmax(v[pre - int(0.05 * fs):pre + int(0.05 * fs)]))
    floor = np.percentile(v, 10)
    thr = floor + 0.08 * (v[centre] - floor)
    # Walk outward from the peak; a notch (the two humps of a bundle branch block) shorter than
    # 20 ms does not end the complex.
    gap = int(0.02 * fs)
    on = _edge(v, thr, centre, -1, pre - int(0.2 * fs), gap)
    off = _edge(v, thr, centre, 1, pre + int(0.2 * fs), gap)
    qrs_ms = (off - on) / fs * 1000
    base_idx = max(0, on - int(0.02 * fs))
    base = med[:, base_idx]
    j60 = min(med.shape[1] - 1, off + int(0.06 * fs))
    st = med[:, j60] - base
    rr_mean = float(np.median(rr)) if rr.size else 1.0
    qt = 0.4 * np.sqrt(rr_mean)
    t0, t1 = on + int(0.45 * qt * fs), on + int(0.8 * qt * fs)
    t_level = med[:, t0:max(t1, t0 + 1)].mean(axis=1) - base
    # P wave: largest lead-II deflection 80-330 ms before the QRS onset, after the previous T.
    lead_ii = med[1]
    lo = max(0, on - int(min(0.33, 0.55 * rr_mean) * fs))
    hi = on - int(0.06 * fs)
    pr_ms = None
    if hi > lo:
        seg = lead_ii[lo:hi] - lead_ii[base_idx]
        i = int(np.argmax(seg))
        if seg[i] > 0.04:
            pr_ms = (on - (lo + i)) / fs * 1000 + 40.0  # P onset sits ~40 ms before its peak
    return EcgMeasurements(heart_rate=60.0 / rr_mean, rr_s=rr, qrs_ms=qrs_ms, pr_ms=pr_ms, st_mv=st,
                           t_mv=t_level, median_beat=med)


def _edge(v: np.ndarray, thr: float, start: int, step: int, limit: int, gap: int) -> int:
    """Last index above `thr` walking from `start` by `step`, tolerating sub-threshold runs < gap."""
    last = i = start
    while (i - limit) * step < 0 and 0 < i < v.size - 1:
        i += step
        if v[i] > thr:
            last = i
        elif abs(i - last) > gap:
            break
    return last
