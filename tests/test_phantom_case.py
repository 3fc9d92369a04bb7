"""Phantom cases: contract, determinism, follow-ups, missing modalities, report text."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from encoders.errors import InvalidInputError
from training.phantom import ALL_LABELS, ECG_LABELS, XRAY_LABELS, generate_case, generate_cases
from training.phantom.latent import sample_latent

SEED = 20261121


def test_label_tuples_match_the_architecture_contract():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    table = doc[doc.index("| id | seen in |"):]
    table = table[: table.index("\n\n")]
    table_ids = [i for line in table.splitlines() if line.startswith("| `")
                 for i in re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])]
    assert set(ALL_LABELS) == set(table_ids)
    assert set(XRAY_LABELS) | set(ECG_LABELS) == set(ALL_LABELS)
    assert "normal" in XRAY_LABELS and "normal" in ECG_LABELS and len(ALL_LABELS) >= 16


def test_case_fields_and_shapes():
    case = next(c for c in (generate_case(SEED, i, xray_size=128, missing_rate=0.0) for i in range(50)) if c.xray_masks)
    assert case.case_id.startswith(f"ph{SEED}-")
    assert case.xray.dtype == np.uint8 and case.xray.shape == (128, 128)
    assert case.ecg.dtype == np.float32 and case.ecg.shape == (12, 5000) and case.ecg_fs == 500
    assert list(case.lead_names) == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    assert all(m.shape == (128, 128) and m.dtype == bool for m in case.xray_masks.values())
    assert set(case.xray_masks) <= set(case.labels)
    assert "FINDINGS:" in case.xray_report and "IMPRESSION:" in case.xray_report
    assert case.report.startswith(case.xray_report) and case.ecg_report in case.report
    json.dumps(case.attributes)  # exported as the manifest's attributes column


def test_same_seed_and_index_give_the_same_case_whatever_the_xray_size():
    a = generate_case(SEED, 7, xray_size=128, missing_rate=0.0)
    b = generate_case(SEED, 7, xray_size=256, missing_rate=0.0)
    c = generate_case(SEED, 7, xray_size=128, missing_rate=0.0)
    assert a.labels == b.labels and a.attributes == b.attributes and a.report == b.report
    assert np.array_equal(a.ecg, b.ecg) and a.ecg_masks == b.ecg_masks
    assert np.array_equal(a.xray, c.xray)
    assert generate_case(SEED + 1, 7, xray_size=128).report != a.report


def test_pool_and_serial_generation_agree():
    serial = generate_cases(20, SEED, xray_size=64, workers=1)
    pooled = generate_cases(20, SEED, xray_size=64, workers=2)
    assert [c.case_id for c in serial] == [f"ph{SEED}-{i:06d}" for i in range(20)]
    for a, b in zip(serial, pooled):
        assert a.labels == b.labels and a.report == b.report
        assert (a.xray is None and b.xray is None) or np.array_equal(a.xray, b.xray)


def test_patients_have_follow_ups_with_persistent_chronic_disease():
    latents = [sample_latent(SEED, i) for i in range(400)]
    per_patient = Counter(lat.patient_id for lat in latents)
    assert sum(1 for n in per_patient.values() if n >= 2) >= 40
    assert max(per_patient.values()) <= 3
    by_patient: dict[str, list] = {}
    for lat in latents:
        by_patient.setdefault(lat.patient_id, []).append(lat)
    for visits in by_patient.values():
        assert len({(v.attributes["sex"], v.attributes["habitus"]) for v in visits}) == 1
        times = [v.study_time for v in visits]
        assert times == sorted(times)


@pytest.mark.parametrize("rate", [0.0, 0.15, 0.3])
def test_missing_modality_rate(rate):
    latents = [sample_latent(SEED, i, missing_rate=rate) for i in range(1500)]
    for modality in ("xray", "ecg", "text"):
        share = np.mean([modality in lat.missing for lat in latents])
        assert abs(share - rate) < 0.035, (modality, share)
    assert all(len(lat.missing) <= 2 for lat in latents)


def test_label_prevalence_and_co_occurrence_are_plausible():
    labels = [set(sample_latent(SEED, i).labels) for i in range(2000)]
    prevalence = {lab: np.mean([lab in s for s in labels]) for lab in ALL_LABELS}
    assert all(0.05 <= p <= 0.4 for p in prevalence.values()), prevalence

    def rate(lab, given=None, without=None):
        pool = [s for s in labels if (given is None or given in s) and (without is None or without not in s)]
        return np.mean([lab in s for s in pool])

    assert rate("lvh", given="cardiomegaly") > 2 * rate("lvh", without="cardiomegaly")
    assert rate("pulmonary_edema", given="cardiomegaly") > 3 * rate("pulmonary_edema", without="cardiomegaly")
    assert rate("atrial_fibrillation", given="cardiomegaly") > 2 * rate("atrial_fibrillation", without="cardiomegaly")
    for s in labels:
        assert len(s & {"sinus_tachycardia", "sinus_bradycardia", "atrial_fibrillation"}) <= 1
        assert not {"lbbb", "rbbb"} <= s and not {"first_degree_av_block", "atrial_fibrillation"} <= s
        assert ("normal" in s) == (len(s) == 1 and "normal" in s)


def test_reports_mention_findings_with_variety_negations_and_typos():
    cases = [generate_case(SEED, i, xray_size=64, missing_rate=0.0) for i in range(120)]
    effusion = [c for c in cases if "pleural_effusion_left" in c.labels]
    assert effusion and np.mean(["effusion" in c.xray_report.lower() for c in effusion]) >= 0.9
    ptx_free = [c for c in cases if "pneumothorax" not in c.labels]
    assert any("no pneumothorax" in c.xray_report.lower() for c in ptx_free)
    assert not any("no pneumothorax" in c.xray_report.lower() for c in cases if "pneumothorax" in c.labels)
    lbbb = [c for c in cases if "lbbb" in c.labels]
    # Mostly verbatim; the odd dictation typo ("bnudle") is intended.
    assert np.mean([("left bundle" in c.ecg_report.lower() or "lbbb" in c.ecg_report.lower()) for c in lbbb]) >= 0.8
    texts = [c.report for c in cases]
    assert len(set(texts)) == len(texts)
    assert any(w in t.lower() for t in texts for w in ("possible", "probable", "likely", "suspicious", "cannot exclude"))


def test_bad_arguments_raise_invalid_input():
    with pytest.raises(InvalidInputError, match="xray_size"):
        generate_case(1, 0, xray_size=10)
    with pytest.raises(InvalidInputError, match="missing_rate"):
        generate_case(1, 0, missing_rate=1.5)
    with pytest.raises(InvalidInputError, match="index"):
        generate_case(1, -1)
