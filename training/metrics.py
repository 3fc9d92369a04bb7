"""Metric arithmetic for `tribind eval`: AUROC, same-case recall@k and label precision@k.

Retrieval is evaluated among the cases that have both modalities of a direction; query i's own case
is gallery item i. Similarities are dot products of unit vectors (cosine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when `truth` has a single class (undefined)."""
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, np.asarray(scores, dtype=np.float64)))


def retrieval_metrics(query: np.ndarray, gallery: np.ndarray, query_labels: Sequence[frozenset[str]],
                      gallery_labels: Sequence[frozenset[str]], ks: Sequence[int] = (1, 5, 10),
                      precision_k: int = 10) -> dict[str, float | int | None]:
    """r@k: share of queries whose own case is in the top k.

    label_p@k: over queries with at least one relevant label, the mean share of the top k whose
    relevant labels intersect the query's (query_labels / gallery_labels hold the relevant, non-normal
    labels only). The query's own case counts like any other result. None when no query qualifies.
    """
    n = len(query)
    out: dict[str, float | int | None] = {"gallery": n}
    if n == 0:
        out.update({f"r@{k}": None for k in ks})
        out[f"label_p@{precision_k}"] = None
        out["label_queries"] = 0
        return out
    sims = query @ gallery.T
    own = np.diag(sims)
    # Rank of the own case = number of gallery items scoring strictly higher (ties favour the truth
    # only as much as a stable sort would; embeddings are continuous, ties do not occur in practice).
    rank = (sims > own[:, None]).sum(axis=1)
    for k in ks:
        out[f"r@{k}"] = float((rank < k).mean())
    k = min(precision_k, n)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    precisions = []
    for i in range(n):
        wanted = query_labels[i]
        if not wanted:
            continue
        precisions.append(np.mean([bool(wanted & gallery_labels[j]) for j in top[i]]))
    out[f"label_p@{precision_k}"] = float(np.mean(precisions)) if precisions else None
    out["label_queries"] = len(precisions)
    out[f"chance_r@{max(ks)}"] = min(1.0, max(ks) / n)
    return out
