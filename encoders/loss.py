"""The tri-modal contrastive loss: CLIP's InfoNCE summed over X-ray<->text, ECG<->text and X-ray<->ECG.

Each pair is computed only over the samples that have both modalities. open_clip's `ClipLoss` does
the cross-rank gathering (local_loss / gather_with_grad), which needs the same batch size on every
rank; so every rank sends its full local batch (rows of a missing modality are zero vectors) plus a
validity mask, and the masked rows and columns are taken out of the softmax here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

PAIRS: tuple[tuple[str, str], ...] = (("xray", "text"), ("ecg", "text"), ("xray", "ecg"))


class MaskedClipLoss(ClipLoss):
    """`ClipLoss` where only rows with valid[i] take part, as queries and as negatives."""

    def _gather_mask(self, valid: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return valid
        parts = [torch.zeros_like(valid) for _ in range(self.world_size)]
        dist.all_gather(parts, valid)
        return torch.cat(parts)

    def masked_forward(self, a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor,
                       logit_scale: torch.Tensor) -> torch.Tensor:
        logits_a, logits_b = self.get_logits(a, b, logit_scale)
        labels = self.get_ground_truth(a.device, logits_a.shape[0])
        all_valid = self._gather_mask(valid)
        rows = valid if (self.local_loss or self.world_size == 1) else all_valid
        # Padding columns leave the softmax; padding rows leave the mean.
        logits_a = logits_a.masked_fill(~all_valid.unsqueeze(0), float("-inf"))
        logits_b = logits_b.masked_fill(~all_valid.unsqueeze(0), float("-inf"))
        n_rows = rows.sum()
        if int(n_rows) == 0:
            # Still touch the inputs so every rank's autograd graph has the same shape.
            return (a.sum() + b.sum()) * 0.0
        loss_a = F.cross_entropy(logits_a[rows], labels[rows])
        loss_b = F.cross_entropy(logits_b[rows], labels[rows])
        return (loss_a + loss_b) / 2


class TriModalLoss(nn.Module):
    """Weighted sum of the three pair losses; returns (total, {pair name: value})."""

    def __init__(self, weights: dict[str, float], rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.weights = dict(weights)
        self.clip = MaskedClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True,
                                   rank=rank, world_size=world_size)

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                logit_scale: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """`embeddings[m]` is [B, D] for every modality m (zeros where absent); `present[m]` is [B] bool."""
        total = logit_scale * 0.0
        parts: dict[str, float] = {}
        for a, b in PAIRS:
            name = f"{a}_{b}"
            weight = float(self.weights.get(name, 1.0))
            if weight == 0.0:
                continue
            valid = present[a] & present[b]
            term = self.clip.masked_forward(embeddings[a], embeddings[b], valid, logit_scale)
            parts[name] = float(term.detach())
            total = total + weight * term
        return total, parts
