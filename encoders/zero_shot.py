"""Zero-shot labelling by prompt ensembles, positive versus negative (CheXzero, Tiu et al. 2022).

For each label the positive prompts' unit embeddings are averaged and re-normalised (the ensemble),
likewise the negative ones; a case's probability for the label is the softmax over the two
similarities, scaled by the model's temperature. Used by `tribind eval` and by the service.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from encoders.factory import ModelBundle
from encoders.labelsets import Label


@torch.no_grad()
def embed_texts(bundle: ModelBundle, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Unit text embeddings [N, D] in eval mode."""
    model = bundle.model
    was_training = model.training
    model.eval()
    try:
        chunks = [model.encode_text(**bundle.tokenizer(list(texts[i:i + batch_size])))
                  for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def _ensemble(embeddings: torch.Tensor, counts: list[int]) -> torch.Tensor:
    return F.normalize(torch.stack([chunk.mean(dim=0) for chunk in embeddings.split(counts)]), dim=-1)


def label_embeddings(bundle: ModelBundle, labels: Sequence[Label]) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive [K, D], negative [K, D]) ensemble embeddings, one row per label."""
    positive = [p for label in labels for p in label.positive]
    negative = [n for label in labels for n in label.negative]
    pos = _ensemble(embed_texts(bundle, positive), [len(label.positive) for label in labels])
    neg = _ensemble(embed_texts(bundle, negative), [len(label.negative) for label in labels])
    return pos, neg


def zero_shot_probabilities(embeddings: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                            logit_scale: float | torch.Tensor) -> torch.Tensor:
    """[N, D] unit case embeddings -> [N, K] probability that each label is present."""
    scale = torch.as_tensor(logit_scale, dtype=embeddings.dtype)
    pos = scale * embeddings @ positive.T
    neg = scale * embeddings @ negative.T
    return torch.sigmoid(pos - neg)  # = softmax([pos, neg])[0]


def classify(bundle: ModelBundle, embeddings: torch.Tensor, labels: Sequence[Label]) -> torch.Tensor:
    """Probabilities [N, K] for `labels` (see `LabelSet.for_modality`) of embeddings of one modality."""
    positive, negative = label_embeddings(bundle, labels)
    with torch.no_grad():
        return zero_shot_probabilities(embeddings, positive, negative, bundle.model.scale())
