"""Phantom ECGs: lead algebra, and every ECG condition measured on the signal itself."""

from __future__ import annotations

import numpy as np
import pytest

from training.phantom.ecg import FS, LEAD_NAMES, N_SAMPLES, synthesize_ecg
from training.phantom.latent import STREAM_ECG, case_rng, sample_latent
from training.phantom.measure import measure_ecg

SEED = 404
N_PER_CONDITION = 24


def _ecgs(labels: tuple[str, ...], n: int = N_PER_CONDITION, seed: int = SEED):
    """n ECGs with exactly `labels`, over the natural spread of patients, voltages and noise."""
    out = []
    for i in range(n):
        attrs = sample_latent(seed, i).attributes
        signal, masks, params = synthesize_ecg(labels, attrs, case_rng(seed, 10_000 + i, STREAM_ECG))
        out.append((signal, masks, params, measure_ecg(signal, FS)))
    return out


@pytest.fixture(scope="module")
def normal_ecgs():
    return _ecgs(("normal",), n=40)


def test_leads_obey_einthoven_and_goldberger(normal_ecgs):
    sig = normal_ecgs[0][0].astype(np.float64)
    lead = {name: sig[i] for i, name in enumerate(LEAD_NAMES)}
    assert sig.shape == (12, N_SAMPLES)
    assert np.abs(lead["III"] - (lead["II"] - lead["I"])).max() < 1e-5
    assert np.abs(lead["aVR"] + (lead["I"] + lead["II"]) / 2).max() < 1e-5
    assert np.abs(lead["aVL"] - (lead["I"] - lead["II"] / 2)).max() < 1e-5
    assert np.abs(lead["aVF"] - (lead["II"] - lead["I"] / 2)).max() < 1e-5
    assert 0.3 < np.ptp(lead["II"]) < 6  # mV, a believable lead II


def test_normal_ecgs_measure_normal(normal_ecgs):
    m = [e[3] for e in normal_ecgs]
    assert all(57 <= x.heart_rate <= 100 for x in m)  # 62-95 bpm generated; RR measured to 2 ms
    assert np.median([x.qrs_ms for x in m]) <= 110
    assert all(x.rr_irregularity < 0.06 for x in m)
    prs = [x.pr_ms for x in m if x.pr_ms is not None]
    assert len(prs) >= 0.8 * len(m) and np.median(prs) < 200
    assert all(mask == {} for _, mask, _, _ in normal_ecgs)


@pytest.mark.parametrize("bbb", ["lbbb", "rbbb"])
def test_bundle_branch_block_widens_qrs_to_at_least_120_ms(bbb, normal_ecgs):
    cases = _ecgs((bbb,))
    assert all(m.qrs_ms >= 120 for *_, m in cases), [round(m.qrs_ms) for *_, m in cases]
    assert np.mean([m.qrs_ms for *_, m in normal_ecgs] < np.float64(120)) >= 0.9
    for _, masks, params, _ in cases:
        iv = np.array(masks[bbb]["intervals_s"])
        assert len(iv) >= 3 and np.allclose(iv[:, 1] - iv[:, 0], params["qrs_ms"] / 1000, atol=1e-3)
    # Morphology: LBBB has a negative (QS) V1 and a positive V6; RBBB a late positive R' in V1.
    v1 = np.array([m.median_beat[6] for *_, m in cases])
    pre = int(0.4 * FS)
    window = slice(pre - int(0.05 * FS), pre + int(0.1 * FS))
    if bbb == "lbbb":
        assert np.mean([b[window].min() < -abs(b[window].max()) for b in v1]) >= 0.9
    else:
        late = slice(pre + int(0.02 * FS), pre + int(0.09 * FS))
        assert np.mean([b[late].max() > 0.15 for b in v1]) >= 0.9


def test_atrial_fibrillation_is_irregular_without_p_waves():
    cases = _ecgs(("atrial_fibrillation",))
    assert all(m.rr_irregularity > 0.1 for *_, m in cases)
    assert all(p["pr_ms"] is None for _, _, p, _ in cases)
    assert all(masks["atrial_fibrillation"]["intervals_s"] == [[0.0, 10.0]] for _, masks, _, _ in cases)


def test_first_degree_block_prolongs_pr(normal_ecgs):
    cases = _ecgs(("first_degree_av_block",))
    prs = [m.pr_ms for *_, m in cases if m.pr_ms is not None]
    assert len(prs) >= 0.8 * len(cases)
    assert np.median(prs) >= 220 and np.mean(np.array(prs) >= 210) >= 0.85
    assert all(p["pr_ms"] >= 220 for _, _, p, _ in cases)
    for _, masks, p, _ in cases:
        iv = np.array(masks["first_degree_av_block"]["intervals_s"])
        assert np.allclose(iv[:, 1] - iv[:, 0], p["pr_ms"] / 1000, atol=1e-3)


def test_rate_conditions():
    assert all(m.heart_rate > 100 for *_, m in _ecgs(("sinus_tachycardia",)))
    assert all(m.heart_rate < 60 for *_, m in _ecgs(("sinus_bradycardia",)))


def test_anterior_stemi_raises_st_in_v1_to_v4(normal_ecgs):
    cases = _ecgs(("anterior_stemi",))
    st = np.array([m.st_mv[6:10] for *_, m in cases])       # V1-V4
    assert np.mean(st.mean(axis=1) >= 0.2) >= 0.9, st.round(2)
    assert np.median(st) >= 0.2
    # Normal precordial ST sits a little above baseline at J+60 ms (the T upstroke), as in life.
    baseline = np.array([m.st_mv[6:10] for *_, m in normal_ecgs]).mean(axis=1)
    assert np.median(baseline) < 0.1 and np.mean(baseline < 0.2) >= 0.95
    assert all(masks["anterior_stemi"]["leads"] == ["V1", "V2", "V3", "V4"] for _, masks, _, _ in cases)


def test_lvh_is_a_pattern_tall_lateral_r_and_strain(normal_ecgs):
    cases = _ecgs(("lvh",))
    # Lateral strain: inverted T in V5/V6, which normal ECGs do not have.
    assert np.mean([m.t_mv[10:12].mean() < -0.05 for *_, m in cases]) >= 0.9
    assert np.mean([m.t_mv[10:12].mean() > 0.0 for *_, m in normal_ecgs]) >= 0.95

    def sokolow_per_volt(entry):
        _, _, p, m = entry
        beat = m.median_beat
        return (-beat[6].min() + max(beat[10].max(), beat[11].max())) / p["voltage"]

    # At the same habitus voltage, LVH has the larger S(V1) + R(V5/V6).
    assert np.median([sokolow_per_volt(e) for e in cases]) > 1.2 * np.median([sokolow_per_volt(e) for e in normal_ecgs])


def test_same_inputs_same_ecg():
    attrs = sample_latent(SEED, 3).attributes
    a = synthesize_ecg(("lbbb",), attrs, case_rng(SEED, 3, STREAM_ECG))
    b = synthesize_ecg(("lbbb",), attrs, case_rng(SEED, 3, STREAM_ECG))
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
