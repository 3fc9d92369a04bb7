"""12-lead ECG from a moving 3-D cardiac dipole.

The heart is modelled as one dipole whose tip traces P, QRS and T loops (sums of Gaussian lobes, each
with a direction in Frank X/Y/Z). The Dower transform (Dower 1980; its pseudo-inverse is the well-known
"inverse Dower" matrix, Edenbrandt & Pahlm 1988) projects the dipole onto I, II and V1-V6. Those are then
turned into potentials at the nine electrodes, electrode noise is added there (baseline wander, mains
hum, muscle noise) and all twelve leads are re-derived from the electrodes, so Einthoven's law and the
Goldberger relations hold exactly, as in a real recording.

Units: mV, seconds; FS = 500 Hz, 10 s. Axis convention (Dower): X to the patient's left, Y to the feet,
Z to the back (so anterior forces are -Z and read positive in V1).
"""

from __future__ import annotations

import numpy as np

FS = 500
DURATION_S = 10.0
N_SAMPLES = int(FS * DURATION_S)
LEAD_NAMES: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# Rows: I, II, V1..V6; columns: X, Y, Z (Dower et al. 1980).
DOWER = np.array([
    [0.632, -0.235, 0.059],
    [0.235, 1.066, -0.132],
    [-0.515, 0.157, -0.917],
    [0.044, 0.164, -1.387],
    [0.882, 0.098, -1.277],
    [1.213, 0.127, -0.601],
    [1.125, 0.127, -0.086],
    [0.831, 0.076, 0.230],
])

_LVH_LEADS = ["I", "aVL", "V1", "V2", "V5", "V6"]
# The anatomical heart axis (case attribute heart_axis_deg) at which the templates are drawn
# unrotated; a case's deviation from it turns every cardiac dipole in the frontal plane.
NOMINAL_HEART_AXIS_DEG = 45.0


def frontal_rotation(degrees: float) -> np.ndarray:
    """[3, 3] rotation in the frontal (X-Y) plane; positive turns the axis toward the feet (rightward axis)."""
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _lobe(t: np.ndarray, center: float, sigma: float, vec) -> np.ndarray:
    """A Gaussian lobe [3, len(t)] along `vec` (t, center, sigma in s)."""
    return np.outer(vec, np.exp(-0.5 * ((t - center) / sigma) ** 2))


def _asym_lobe(t: np.ndarray, center: float, s_rise: float, s_fall: float, vec) -> np.ndarray:
    sigma = np.where(t < center, s_rise, s_fall)
    return np.outer(vec, np.exp(-0.5 * ((t - center) / sigma) ** 2))


def _plateau(t: np.ndarray, start: float, end: float, edge: float, vec) -> np.ndarray:
    """A smooth-edged step, used for ST-segment shifts (injury current)."""
    up = 0.5 * (1 + np.tanh((t - start) / edge))
    down = 0.5 * (1 - np.tanh((t - end) / (2 * edge)))
    return np.outer(vec, up * down)


def _ventricular_template(labels: set[str], p: dict, rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """QRS-ST-T of one beat as dipoles [3, n] on times t from QRS onset.

    Returns (t, activation and repolarisation, injury current, QRS duration s). The injury current
    (STEMI) is kept apart so that electrode-placement gain cannot shrink the ST elevation below 0.2 mV.
    """
    qt = p["qt_ms"] / 1000
    t = np.arange(-0.05, qt + 0.12, 1 / FS)
    v = p["voltage"]
    d = p["qrs_ms"] / 1000
    jitter = lambda scale=0.12: 1 + scale * rng.standard_normal(3)  # noqa: E731 - per-patient loop shape
    if "lbbb" in labels:
        # Septum activated right-to-left: no septal q laterally, broad notched R in I/aVL/V5/V6, QS in V1-V3.
        qrs = 0.85 * (_lobe(t, 0.14 * d, 0.08 * d, np.array([0.3, 0.15, 0.25]) * jitter())
                      + _lobe(t, 0.38 * d, 0.13 * d, np.array([0.9, 0.55, -0.1]) * jitter())
                      + _lobe(t, 0.70 * d, 0.12 * d, np.array([0.6, 0.4, 0.8]) * jitter()))
        st = np.array([-0.08, 0.0, -0.1])       # discordant ST
        tw = np.array([-0.2, -0.03, -0.2])      # discordant T
    else:
        d0 = 0.09 if "rbbb" in labels else d
        # Infarcted anterior wall generates less voltage: smaller R and S across V2-V4.
        r_loss = 0.6 if "anterior_stemi" in labels else 1.0
        qrs = (_lobe(t, 0.15 * d0, 0.07 * d0, np.array([-0.15, 0.05, -0.3]) * jitter())
               + _lobe(t, 0.45 * d0, 0.12 * d0, np.array([1.2, 0.7, 0.1]) * jitter() * r_loss)
               + _lobe(t, 0.66 * d0, 0.11 * d0, np.array([0.3, 0.2, 0.8]) * jitter() * r_loss)
               + _lobe(t, 0.88 * d0, 0.07 * d0, np.array([-0.25, -0.2, 0.2]) * jitter()))
        st = np.zeros(3)
        tw = np.array([0.3, 0.25, -0.15]) * jitter(0.1)
        if "rbbb" in labels:
            # Late, slow rightward-anterior forces: rsR' in V1, wide S in I and V6.
            tail = d - d0
            qrs = qrs + _lobe(t, d0 + 0.5 * tail, 0.22 * tail, np.array([-0.5, -0.05, -0.6]) * jitter(0.08))
            tw = np.array([0.3, 0.2, 0.15])  # discordant to the R': inverted in V1
        if "lvh" in labels:
            # Exaggerated leftward-posterior forces (tall R V5/V6, deep S V1/V2) with lateral strain.
            gain = p["lvh_gain"]
            qrs = qrs + (gain - 1) * (_lobe(t, 0.45 * d0, 0.12 * d0, np.array([0.8, 0.45, 0.35]))
                                      + _lobe(t, 0.66 * d0, 0.11 * d0, np.array([0.25, 0.1, 0.8])))
            # Strain ST depression is left out under an anterior injury current, which dominates it.
            st = np.array([-0.13, -0.03, -0.05]) * p["strain"] * ("anterior_stemi" not in labels)
            tw = np.array([-0.28, 0.05, 0.12]) * p["strain"]
    xyz = qrs * v
    j_point = d
    t_peak = 0.72 * qt
    xyz = xyz + _asym_lobe(t, t_peak, 0.16 * qt, 0.09 * qt, tw * np.sqrt(v))
    xyz = xyz + _plateau(t, j_point, t_peak, 0.012, st * np.sqrt(v))
    injury = np.zeros((6, t.size))
    if "anterior_stemi" in labels:
        # Injury current under V1-V4. Close to the electrodes it is not dipolar, so it is added to the
        # precordial leads directly, each 0.24-0.34 mV (>= 0.2 mV, not scaled by habitus or placement),
        # with a hyperacute T; V5 catches a little of it.
        course = _plateau(t, j_point - 0.02, t_peak + 0.02, 0.015, [1.0])[0]
        hyper = _asym_lobe(t, t_peak, 0.14 * qt, 0.09 * qt, [1.0])[0]
        st = np.array(p["stemi_st_mv"])
        injury = np.outer(st, course) + np.outer(st * 0.4, hyper)
        # Reciprocal inferior depression through the far field.
        xyz = xyz + _plateau(t, j_point, t_peak, 0.012, np.array([0.0, -0.1, 0.0]) * st.mean())
    return t, xyz, injury, d


def _p_wave(t: np.ndarray, voltage: float) -> np.ndarray:
    """Right then left atrial activation; t from P onset."""
    return (_lobe(t, 0.035, 0.016, np.array([0.02, 0.11, -0.06]) * voltage)
            + _lobe(t, 0.062, 0.017, np.array([0.09, 0.08, 0.07]) * voltage))


def _beat_times(labels: set[str], p: dict, rng: np.random.Generator) -> np.ndarray:
    """QRS onset times (s) covering the record."""
    rr_mean = 60.0 / p["heart_rate"]
    times = []
    t = -rng.uniform(0, rr_mean)
    resp_period = rng.uniform(3.0, 5.5)
    while t < DURATION_S + 0.1:
        times.append(t)
        if "atrial_fibrillation" in labels:
            # "Irregularly irregular": independent RRs with a high coefficient of variation.
            rr = rr_mean * float(np.clip(rng.lognormal(0.0, p["rr_cv"]), 0.55, 1.9))
            rr = max(rr, 0.3)
        else:
            rr = rr_mean * (1 + 0.025 * np.sin(2 * np.pi * t / resp_period) + 0.008 * rng.standard_normal())
        t += rr
    return np.array(times)


def ecg_parameters(labels: set[str], attributes: dict, rng: np.random.Generator) -> dict:
    """Intervals, rate and voltage of the case (exported as case truth)."""
    habitus_gain = {"slender": 1.3, "average": 1.0, "broad": 0.72}[attributes["habitus"]]
    p: dict = {}
    if "sinus_tachycardia" in labels:
        hr = rng.uniform(108, 150)
    elif "sinus_bradycardia" in labels:
        hr = rng.uniform(38, 54)
    elif "atrial_fibrillation" in labels:
        hr = rng.uniform(70, 135)
    else:
        hr = rng.uniform(62, 95)
    p["heart_rate"] = round(float(hr), 1)
    rr = 60 / hr
    p["pr_ms"] = None if "atrial_fibrillation" in labels else round(float(
        rng.uniform(240, 340) if "first_degree_av_block" in labels else rng.uniform(125, 185)), 1)
    if "lbbb" in labels or "rbbb" in labels:
        p["qrs_ms"] = round(float(rng.uniform(140, 175)), 1)
    else:
        p["qrs_ms"] = round(float(rng.uniform(80, 100)), 1)
    qtc = rng.uniform(390, 450) + (p["qrs_ms"] - 90) * 0.5
    p["qt_ms"] = round(float(np.clip(qtc * np.sqrt(rr), 300, 520)), 1)
    p["voltage"] = round(float(habitus_gain * rng.lognormal(0.0, 0.28)), 3)
    p["lvh_gain"] = round(float(rng.uniform(1.35, 1.65)), 3)
    p["strain"] = round(float(rng.uniform(0.8, 1.4)), 3)
    v1_v4 = rng.uniform(0.24, 0.34, size=4)
    p["stemi_st_mv"] = [round(float(v), 3) for v in (*v1_v4, 0.3 * v1_v4[3], 0.0)]
    p["rr_cv"] = round(float(rng.uniform(0.16, 0.28)), 3)
    return p


def _electrode_noise(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Noise at the nine electrodes RA, LA, LL, V1-V6 [9, n] (mV)."""
    n = t.size
    wander_amp = rng.lognormal(np.log(0.1), 0.7)
    mains_hz = 50.0 if rng.random() < 0.5 else 60.0
    mains_amp = rng.uniform(0.0, 0.03)
    emg_amp = rng.lognormal(np.log(0.007), 0.5)
    noise = np.empty((9, n))
    white = rng.standard_normal((9, n))
    for e in range(9):
        f1, f2 = rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.5)
        wander = wander_amp * (rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi))
                               + rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 2 * np.pi)))
        hum = mains_amp * rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * mains_hz * t + rng.uniform(0, 2 * np.pi))
        limb = 1.6 if e < 3 else 1.0  # limb electrodes pick up more skeletal muscle
        emg = emg_amp * limb * white[e]
        noise[e] = wander + hum + emg
    return noise


def leads_from_electrodes(el: np.ndarray) -> np.ndarray:
    """The 12 standard leads [12, n] from electrode potentials RA, LA, LL, V1..V6 [9, n]."""
    ra, la, ll = el[0], el[1], el[2]
    wct = (ra + la + ll) / 3
    return np.stack([
        la - ra, ll - ra, ll - la,
        ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2,
        *(el[3:] - wct),
    ])


def synthesize_ecg(labels: tuple[str, ...], attributes: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict, dict]:
    """(signal float32 [12, 5000] mV, masks {label: {"intervals_s", "leads"}}, parameters)."""
    labs = set(labels)
    p = ecg_parameters(labs, attributes, rng)
    t = np.arange(N_SAMPLES) / FS
    xyz = np.zeros((3, N_SAMPLES))
    tv, template, injury_template, qrs_s = _ventricular_template(labs, p, rng)
    injury = np.zeros((6, N_SAMPLES))
    beats = _beat_times(labs, p, rng)
    af = "atrial_fibrillation" in labs
    pr = (p["pr_ms"] or 0) / 1000
    p_t = np.arange(0, 0.12, 1 / FS)
    p_template = _p_wave(p_t, rng.uniform(0.8, 1.2) * min(p["voltage"], 1.3))
    qrs_iv, pr_iv, st_iv, beat_iv = [], [], [], []
    for onset in beats:
        amp = 1 + 0.04 * rng.standard_normal()  # respiration moves the heart slightly
        _add(xyz, template * amp, int(round((onset + tv[0]) * FS)))
        _add(injury, injury_template, int(round((onset + tv[0]) * FS)))
        if not af:
            _add(xyz, p_template, int(round((onset - pr) * FS)))
        if 0 <= onset and onset + qrs_s <= DURATION_S:
            qrs_iv.append([onset, onset + qrs_s])
            st_iv.append([onset + qrs_s, min(onset + p["qt_ms"] / 1000, DURATION_S)])
            beat_iv.append([onset, min(onset + p["qt_ms"] / 1000, DURATION_S)])
        if not af and onset - pr >= 0 and onset <= DURATION_S:
            pr_iv.append([onset - pr, onset])
    if af:
        # Fibrillatory waves: a few 4-9 Hz components with wandering phase, seen best in V1 and II.
        direction = np.array([0.1, 0.5, -0.8])
        f_amp = rng.uniform(0.06, 0.14)
        fw = np.zeros(N_SAMPLES)
        for _ in range(3):
            f = rng.uniform(4.0, 9.0)
            phase = np.cumsum(rng.normal(0, 0.05, N_SAMPLES))
            fw += np.sin(2 * np.pi * f * t + phase + rng.uniform(0, 2 * np.pi))
        xyz += np.outer(direction, f_amp * fw / 1.7)

    # Half the anatomical deviation: the whole range then keeps the lateral T waves upright in normals.
    turn = 0.5 * (attributes.get("heart_axis_deg", NOMINAL_HEART_AXIS_DEG) - NOMINAL_HEART_AXIS_DEG)
    xyz = frontal_rotation(turn) @ xyz
    eight = DOWER @ xyz                              # I, II, V1..V6
    # Chest-electrode placement and chest-wall thickness change each precordial lead's gain in real
    # recordings; this also keeps one lead's RMS from giving a diagnosis away (difficulty guard).
    eight[2:] *= rng.lognormal(0.0, 0.15) * rng.lognormal(0.0, 0.22, size=(6, 1))
    eight[2:] += injury
    lead_i, lead_ii = eight[0], eight[1]
    ra = -(lead_i + lead_ii) / 3                     # electrode potentials with WCT at 0
    electrodes = np.vstack([ra, ra + lead_i, ra + lead_ii, eight[2:]])
    electrodes += _electrode_noise(rng, t)
    signal = leads_from_electrodes(electrodes).astype(np.float32)

    def iv(xs):
        return [[round(float(a), 4), round(float(b), 4)] for a, b in xs]

    masks: dict[str, dict] = {}
    whole = [[0.0, DURATION_S]]
    for lab in labs:
        if lab in ("atrial_fibrillation", "sinus_tachycardia", "sinus_bradycardia"):
            masks[lab] = {"intervals_s": whole, "leads": ["II", "V1"] if lab == "atrial_fibrillation" else []}
        elif lab == "first_degree_av_block":
            masks[lab] = {"intervals_s": iv(pr_iv), "leads": []}
        elif lab == "lbbb":
            masks[lab] = {"intervals_s": iv(qrs_iv), "leads": ["I", "aVL", "V1", "V2", "V3", "V5", "V6"]}
        elif lab == "rbbb":
            masks[lab] = {"intervals_s": iv(qrs_iv), "leads": ["I", "V1", "V2", "V5", "V6"]}
        elif lab == "lvh":
            masks[lab] = {"intervals_s": iv(beat_iv), "leads": list(_LVH_LEADS)}
        elif lab == "anterior_stemi":
            masks[lab] = {"intervals_s": iv(st_iv), "leads": ["V1", "V2", "V3", "V4"]}
    p["qrs_onsets_s"] = [round(float(b), 4) for b in beats if 0 <= b <= DURATION_S]
    return signal, masks, p


def _add(target: np.ndarray, piece: np.ndarray, start: int) -> None:
    """target[:, start:start+len] += piece, clipped to the record."""
    n = target.shape[1]
    a, b = max(start, 0), min(start + piece.shape[1], n)
    if a < b:
        target[:, a:b] += piece[:, a - start:b - start]
