"""The functions the service and the CLI call: an item against a target, a pair, case evidence.

    from encoders.explain import api, xray_item, text_item, label_target
    e = api.explain(bundle, xray_item(bundle, "film.png"), label_target(bundle, "pleural effusion"))
    pair = api.explain_pair(bundle, query_item, hit_item)        # both sides of a retrieval hit
    evidence = api.case_evidence(bundle, label_target(bundle, "atrial_fibrillation"), neighbours, k=3)

Every score here is the cosine of two unit embeddings, the same number Search and Classify return
(for a label: the similarity to its positive prompt ensemble, the positive half of zero-shot scoring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from encoders.errors import InvalidInputError
from encoders.explain.engine import Explanation, embed_items, explain_batch
from encoders.explain.items import Item
from encoders.explain.relevance import DEFAULT_METHOD
from encoders.explain.targets import Target


@dataclass
class PairExplanation:
    """Both sides of one similarity: which regions of `a` and of `b` drive cos(a, b)."""

    score: float
    a: Explanation
    b: Explanation


@dataclass
class CaseEvidence:
    """One library case offered as evidence for a label ("it looks like these"), with its own map."""

    case_id: str
    score: float
    explanation: Explanation


def explain(bundle, item: Item, target: Target, method: str = DEFAULT_METHOD) -> Explanation:
    """Relevance of `item`'s regions for cos(item, target)."""
    return explain_batch(bundle, [item], target.embedding, method, descriptions=[target.description])[0]


def explain_pair(bundle, a: Item, b: Item, method: str = DEFAULT_METHOD) -> PairExplanation:
    """Pairwise mode: each side is explained against the other's embedding, so both maps explain the
    same number cos(a, b) (the cosine of unit vectors is linear in each side with the other fixed)."""
    za = embed_items(bundle, [a])[0]
    zb = embed_items(bundle, [b])[0]
    side_a = explain_batch(bundle, [a], zb, method, descriptions=[f"{b.modality} {b.name}".strip()])[0]
    side_b = explain_batch(bundle, [b], za, method, descriptions=[f"{a.modality} {a.name}".strip()])[0]
    return PairExplanation(score=float(za @ zb), a=side_a, b=side_b)


def case_evidence(bundle, target: Target, cases: Sequence[tuple[str, Item]], k: int = 3,
                  method: str = DEFAULT_METHOD) -> list[CaseEvidence]:
    """The k of `cases` (case id, item) most similar to `target`, each with its heatmap for it.

    The caller picks the candidates (the service: the library's nearest cases that carry the label);
    items may mix modalities. Ordered by score, highest first.
    """
    if k < 1:
        raise InvalidInputError("k", f"got {k}; ask for at least one case")
    if not cases:
        return []
    by_modality: dict[str, list[int]] = {}
    for i, (_, item) in enumerate(cases):
        by_modality.setdefault(item.modality, []).append(i)
    found: list[CaseEvidence] = []
    for rows in by_modality.values():
        items = [cases[i][1] for i in rows]
        explanations = explain_batch(bundle, items, target.embedding, method,
                                     descriptions=[target.description] * len(items))
        found += [CaseEvidence(cases[i][0], e.score, e) for i, e in zip(rows, explanations)]
    found.sort(key=lambda evidence: -evidence.score)
    return found[:k]
