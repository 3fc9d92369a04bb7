"""Explanations of similarity scores: which X-ray patches, ECG lead x time windows and report words
drive the cosine between an item and a target (a label, a text, another item, a stored case).

Methods: "chefer" (default; Chefer et al. 2021 gradient-weighted attention relevance) and "rollout"
(attention rollout, the target-independent baseline). Pictures: `encoders.explain.figures` (PNG) and
`encoders.explain.highlight` (ANSI / HTML word highlighting). User docs: README.md.
"""

from encoders.explain.api import CaseEvidence, PairExplanation, case_evidence, explain, explain_pair
from encoders.explain.engine import Explanation, embed_items, explain_batch
from encoders.explain.items import Item, ecg_item, ecg_record_item, text_item, xray_item
from encoders.explain.relevance import DEFAULT_METHOD, METHODS
from encoders.explain.targets import Target, embedding_target, item_target, label_target, text_target

__all__ = [
    "DEFAULT_METHOD", "METHODS", "CaseEvidence", "Explanation", "Item", "PairExplanation", "Target",
    "case_evidence", "ecg_item", "ecg_record_item", "embed_items", "embedding_target", "explain",
    "explain_batch", "explain_pair", "item_target", "label_target", "text_item", "text_target", "xray_item",
]
