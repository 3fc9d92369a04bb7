"""The phantom's shared anatomical latent: heart tilt on the film <-> frontal QRS axis on the ECG.

Same-case X-ray<->ECG retrieval (issue 3) needs information both pictures carry beyond the labels;
this checks that the axis really reaches both renderers, in the clinical direction.
"""

from __future__ import annotations

import numpy as np

from training.phantom.ecg import LEAD_NAMES, synthesize_ecg
from training.phantom.latent import HEART_AXIS_BY_HABITUS
from training.phantom.xray import _Anatomy


def _frontal_qrs_axis(signal: np.ndarray) -> float:
    """Degrees: direction of the largest frontal-plane deflection (the R peak) from leads I and aVF."""
    lead_i, avf = signal[LEAD_NAMES.index("I")], signal[LEAD_NAMES.index("aVF")]
    t = int(np.argmax(lead_i ** 2 + avf ** 2))
    return float(np.degrees(np.arctan2(avf[t], lead_i[t])))


def test_ecg_axis_follows_the_heart_axis_attribute():
    axes = (-20.0, 10.0, 40.0, 70.0, 100.0)
    measured = []
    for axis in axes:
        attrs = {"habitus": "average", "heart_axis_deg": axis}
        signal, _, _ = synthesize_ecg(("normal",), attrs, np.random.default_rng(3))
        measured.append(_frontal_qrs_axis(signal))
    # Same seed, so only the rotation differs. Leads I and aVF are not an orthogonal view of the Dower
    # dipole, so the measured axis is monotone in the attribute but not equal to it.
    assert all(b > a + 5 for a, b in zip(measured, measured[1:])), measured
    assert measured[-1] - measured[0] > 45, measured


def test_film_heart_tilt_follows_the_same_axis():
    def shear(axis: float) -> float:
        attrs = {"habitus": "average", "ctr": 0.45, "heart_axis_deg": axis}
        return _Anatomy(attrs, set(), np.random.default_rng(5)).shear

    tilts = [shear(a) for a in (-20.0, 20.0, 60.0, 100.0)]
    # Horizontal heart (leftward axis) leans further: shear falls as the axis turns rightward.
    assert all(a > b + 0.1 for a, b in zip(tilts, tilts[1:])), tilts
    assert HEART_AXIS_BY_HABITUS["broad"] < HEART_AXIS_BY_HABITUS["average"] < HEART_AXIS_BY_HABITUS["slender"]
