"""What each tower's embedding holds of the traits the phantom draws into both the film and the ECG.

Why: X-ray<->ECG retrieval can match a case only through what both pictures show: its findings, and
three continuous traits of the patient (training/phantom/latent.py): the heart's axis (the film tilts
the heart, the ECG turns its frontal-plane dipole), the heart's size (CTR) and the habitus (the
chest's width, the ECG's voltage). r@10 mixes all of them; a linear probe on each tower's embedding
says which trait a model has learnt, and how sharply. Session 13 found the heart axis at R^2 0.79
(X-ray) and 0.86 (ECG) with this probe for a model at ~10x chance r@10 (run s13a, seed 777), and that its similarities, plus a penalty on
the two cases' axis difference known to +-6 degrees, would read ~17x (README, The bundled checkpoint,
Session 13).

Probe: ridge regression (lambda 1) from the embedding to the trait, fitted on alternate cases and
scored (R^2) on the others, both ways round, averaged. R^2 <= 0 means the trait cannot be read
linearly; a random-init tower reads some of it too, because random features of a picture still
vary with the picture (the `random_init` figures show how much).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from training.phantom.latent import sample_latent

HABITUS_ORDER = {"slender": 0.0, "average": 1.0, "broad": 2.0}
SHARED_TRAITS = ("heart_axis_deg", "ctr", "habitus")


def phantom_traits(seed: int, cases: int, start: int = 0) -> dict[str, np.ndarray]:
    """[cases] float values of each shared trait for phantom cases start .. start + cases - 1 of
    `seed` (the latent case only: nothing is rendered). Habitus as 0 / 1 / 2 = slender / average / broad."""
    rows = [sample_latent(seed, start + i).attributes for i in range(cases)]
    return {
        "heart_axis_deg": np.array([float(a["heart_axis_deg"]) for a in rows]),
        "ctr": np.array([float(a["ctr"]) for a in rows]),
        "habitus": np.array([HABITUS_ORDER[a["habitus"]] for a in rows]),
    }


def probe_r2(features: np.ndarray, target: np.ndarray, ridge: float = 1.0) -> float | None:
    """Two-fold R^2 of a ridge regression from `features` [N, D] to `target` [N] (module docstring);
    None when fewer than 8 cases or the target is constant."""
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if len(target) < 8 or np.ptp(target) == 0:
        return None
    fold = np.arange(len(target)) % 2 == 0
    scores = []
    for test in (fold, ~fold):
        if np.ptp(target[test]) == 0:
            return None
        # scikit-learn's Ridge centres the data, so the intercept is not shrunk.
        model = Ridge(alpha=ridge).fit(features[~test], target[~test])
        scores.append(r2_score(target[test], model.predict(features[test])))
    return round(float(np.mean(scores)), 4)


def shared_trait_probe(embeddings: dict[str, np.ndarray], present: dict[str, np.ndarray],
                       traits: dict[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """{modality: {trait: R^2}} for the X-ray and ECG embeddings [N, D] of the cases that have them."""
    out: dict[str, dict[str, float | None]] = {}
    for modality in ("xray", "ecg"):
        rows = np.asarray(present[modality], dtype=bool)
        out[modality] = {name: probe_r2(np.asarray(embeddings[modality])[rows], values[rows])
                         for name, values in traits.items()}
    return out
