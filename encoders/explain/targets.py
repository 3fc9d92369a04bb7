"""What an item is explained against: a unit vector in the joint space, and words that say what it is.

The explained score is the cosine similarity between the item's embedding and this vector. A label
is its positive prompt ensemble (the mean of the unit prompt embeddings, re-normalised: the same vector
zero-shot labelling uses); a stored case is its stored vector. `contrast=True` makes a label's vector
the positive minus the negative ensemble, so the explained score is cos(z, pos) - cos(z, neg): the
zero-shot logit divided by the model's temperature, i.e. exactly what decides Classify's probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from encoders.errors import InvalidInputError

TARGET_KINDS: tuple[str, ...] = ("label", "text", "item", "embedding")


@dataclass(frozen=True)
class Target:
    kind: str                 # one of TARGET_KINDS
    description: str          # e.g. "label pleural_effusion_left", "text 'blunted costophrenic angle'"
    embedding: torch.Tensor   # [D], no graph; unit norm except for a contrast label (pos - neg)


def label_target(bundle, label: str, labelset: str = "phantom", contrast: bool = False) -> Target:
    """A label id of `labelset` -> its positive prompt ensemble.

    Forgiving about spelling ("pleural effusion" matches pleural_effusion_left and _right: their
    ensembles are pooled); text that matches no id is used as a free-text prompt.
    """
    from encoders.labelsets import load_labelset
    from encoders.zero_shot import embed_texts

    chosen = load_labelset(labelset).matching(label)
    if not chosen:
        return text_target(bundle, label)
    ids = "+".join(lab.id for lab in chosen)
    positive = F.normalize(embed_texts(bundle, [p for lab in chosen for p in lab.positive]).mean(dim=0), dim=0)
    if not contrast:
        return Target("label", f"label {ids}", positive)
    negative = F.normalize(embed_texts(bundle, [n for lab in chosen for n in lab.negative]).mean(dim=0), dim=0)
    return Target("label", f"label {ids} (positive - negative prompts)", positive - negative)


def text_target(bundle, text: str) -> Target:
    from encoders.zero_shot import embed_texts

    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("target.text", "is empty; send the text to compare with")
    short = text if len(text) <= 60 else text[:57] + "..."
    return Target("text", f"text '{short}'", embed_texts(bundle, [text])[0])


def embedding_target(vector, description: str = "stored case") -> Target:
    """A stored vector (e.g. a library case's) as a target; it must be unit-norm like every stored vector."""
    tensor = torch.as_tensor(vector, dtype=torch.float32).flatten()
    if not torch.isfinite(tensor).all() or abs(float(tensor.norm()) - 1.0) > 1e-3:
        raise InvalidInputError("target.embedding", "must be a finite unit-norm vector of the model's dimension")
    return Target("embedding", description, tensor)


def item_target(bundle, item) -> Target:
    """Another item: its embedding (no graph)."""
    from encoders.explain.engine import embed_items

    return Target("item", f"{item.modality} {item.name}".strip(), embed_items(bundle, [item])[0])
