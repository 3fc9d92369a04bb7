"""Difficulty guard: no trivial global feature predicts any condition (AUROC <= 0.75).

Features: X-ray mean and standard deviation, the RMS of each ECG lead, and the report length. Each is
scored alone, in whichever direction predicts better. If one of these passes 0.75 the models could
learn a shortcut instead of the finding.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from training.phantom import ALL_LABELS, generate_cases

N_CASES, SEED, MIN_POSITIVES = 700, 9001, 20
LIMIT = 0.75


def _auroc(feature: np.ndarray, y: np.ndarray) -> float:
    a = roc_auc_score(y, feature)
    return max(a, 1 - a)


def test_no_trivial_global_feature_predicts_a_condition():
    cases = generate_cases(N_CASES, SEED, xray_size=64, workers=2)
    features: dict[str, tuple[list, np.ndarray]] = {}
    films = [c for c in cases if c.xray is not None]
    x = np.array([c.xray.astype(np.float64) for c in films])
    features["xray mean"] = (films, x.mean(axis=(1, 2)))
    features["xray std"] = (films, x.std(axis=(1, 2)))
    ecgs = [c for c in cases if c.ecg is not None]
    sig = np.array([c.ecg for c in ecgs], dtype=np.float64)
    rms = np.sqrt(((sig - sig.mean(axis=2, keepdims=True)) ** 2).mean(axis=2))
    for k, lead in enumerate(ecgs[0].lead_names):
        features[f"ECG {lead} RMS"] = (ecgs, rms[:, k])
    texts = [c for c in cases if c.report]
    features["report length"] = (texts, np.array([len(c.report) for c in texts], dtype=float))

    worst = []
    for name, (subset, values) in features.items():
        for label in ALL_LABELS:
            y = np.array([label in c.labels for c in subset])
            if y.sum() < MIN_POSITIVES or (~y).sum() < MIN_POSITIVES:
                continue
            worst.append((_auroc(values, y), name, label))
    assert len({label for _, _, label in worst}) == len(ALL_LABELS)
    offenders = [w for w in worst if w[0] > LIMIT]
    assert not offenders, sorted(offenders, reverse=True)
