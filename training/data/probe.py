"""Linear probe and AUROC reporting on frozen features.

Probe: per label, standardised features -> L2-regularised logistic regression (class-balanced, since
most findings are rare), as in the PTB-XL and CheXpert linear-evaluation literature. Protocol:
- the source's own test split when it has one (PTB-XL: train on strat_fold 1-8, test on 9-10);
- otherwise cross-validation over groups that keep a patient on one side (PTB-XL folds, else
  patients), pooling the out-of-fold scores into one AUROC per label.
A label with only one class in a test set gets no AUROC (reported as null, left out of the macro).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CV_FOLDS = 4


def auroc_table(targets: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> dict:
    """{"macro_auroc", "per_label": {label: auroc|None}, "n_positive": {...}, "n": N}."""
    from sklearn.metrics import roc_auc_score

    per_label: dict[str, float | None] = {}
    positives: dict[str, int] = {}
    for k, label in enumerate(labels):
        column = targets[:, k]
        positives[label] = int(column.sum())
        valid = np.isfinite(scores[:, k])
        column, score = column[valid], scores[valid, k]
        if column.size == 0 or column.min() == column.max():
            per_label[label] = None
            continue
        per_label[label] = round(float(roc_auc_score(column, score)), 4)
    values = [v for v in per_label.values() if v is not None]
    return {
        "macro_auroc": round(float(np.mean(values)), 4) if values else None,
        "per_label": per_label,
        "n_positive": positives,
        "n": int(targets.shape[0]),
    }


def probe_groups(splits: Sequence[str | None], folds: Sequence[str | None], patients: Sequence[str]) -> tuple[str, np.ndarray]:
    """(protocol description, group id per case: -1 = train only, k >= 0 = held out in round k).

    With a test split: one round, test (and val if there is no test) held out. Otherwise CV_FOLDS
    rounds over PTB-XL strat_folds when present, else over patient hashes.
    """
    splits = [s or "" for s in splits]
    if "test" in splits and "train" in splits:
        return "train split -> test split", np.array([0 if s == "test" else -1 for s in splits])
    if "val" in splits and "train" in splits:
        return "train split -> val split", np.array([0 if s == "val" else -1 for s in splits])
    if any(folds):
        distinct = sorted({f for f in folds if f}, key=lambda f: int(f) if f.isdigit() else f)
        group_of = {fold: i % CV_FOLDS for i, fold in enumerate(distinct)}
        return (f"{CV_FOLDS}-fold cross-validation over strat_fold groups {sorted(set(group_of.values()))} "
                f"(folds {distinct[0]}-{distinct[-1]}; no held-out folds present)",
                np.array([group_of.get(f or "", 0) for f in folds]))
    import hashlib

    groups = np.array([int(hashlib.sha1(p.encode()).hexdigest(), 16) % CV_FOLDS for p in patients])
    return f"{CV_FOLDS}-fold cross-validation grouped by patient", groups


def linear_probe_scores(features: np.ndarray, targets: np.ndarray, groups: np.ndarray, seed: int = 0,
                        c: float = 1.0) -> np.ndarray:
    """Held-out probability per case and label (NaN for cases never held out or labels not trainable)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scores = np.full(targets.shape, np.nan, dtype=np.float64)
    for round_id in sorted(set(groups.tolist()) - {-1}):
        test = groups == round_id
        train = ~test
        if train.sum() < 2 or test.sum() == 0:
            continue
        scaler = StandardScaler().fit(features[train])
        x_train, x_test = scaler.transform(features[train]), scaler.transform(features[test])
        for k in range(targets.shape[1]):
            y = targets[train, k]
            if y.min() == y.max():
                continue  # a label never (or always) present in training cannot be probed
            model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", random_state=seed)
            model.fit(x_train, y)
            scores[test, k] = model.predict_proba(x_test)[:, 1]
    return scores
