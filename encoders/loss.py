"""The tri-modal contrastive loss: CLIP's InfoNCE summed over X-ray<->text, ECG<->text and X-ray<->ECG.

Each pair is computed only over the samples that have both modalities. open_clip's `ClipLoss` does
the cross-rank gathering (local_loss / gather_with_grad), which needs the same batch size on every
rank; so every rank sends its full local batch (rows of a missing modality are zero vectors) plus a
validity mask, and the masked rows and columns are taken out of the softmax here.

Label-aware targets (`loss.label_targets`: one share for both text pairs, or one per pair;
MedCLIP's semantic matching, Wang et al. 2022): in a
report corpus many cases share the same findings (every film without findings has a "normal"
report), and CLIP's one-hot target calls all of those reports wrong for the film. With a share
alpha > 0, a pair's target for row i keeps 1 - alpha on its own case and spreads alpha over the
batch's cases in proportion to how alike their findings are (Jaccard over the labels the non-text
modality can show; two cases with none of them count as alike). Only the pairs with text use it:
X-ray<->ECG retrieval is about the same case, so that pair keeps one-hot targets.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from torch import nn

from encoders.config import label_target_shares

PAIRS: tuple[tuple[str, str], ...] = (("xray", "text"), ("ecg", "text"), ("xray", "ecg"))


class MaskedClipLoss(ClipLoss):
    """`ClipLoss` where only rows with valid[i] take part, as queries and as negatives."""

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of a tensor without gradient (validity masks, findings), in rank order."""
        if self.world_size == 1:
            return rows
        parts = [torch.zeros_like(rows) for _ in range(self.world_size)]
        dist.all_gather(parts, rows)
        return torch.cat(parts)

    def masked_forward(self, a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor,
                       logit_scale: torch.Tensor, findings: torch.Tensor | None = None,
                       label_targets: float = 0.0) -> torch.Tensor:
        """`findings` [B, K] bool: the labels each local row's case shows in the non-text modality;
        with `label_targets` > 0 they soften the targets (module docstring)."""
        logits_a, logits_b = self.get_logits(a, b, logit_scale)
        labels = self.get_ground_truth(a.device, logits_a.shape[0])
        all_valid = self._gather_rows(valid)
        rows = valid if (self.local_loss or self.world_size == 1) else all_valid
        # Padding columns leave the softmax; padding rows leave the mean.
        logits_a = logits_a.masked_fill(~all_valid.unsqueeze(0), float("-inf"))
        logits_b = logits_b.masked_fill(~all_valid.unsqueeze(0), float("-inf"))
        n_rows = rows.sum()
        if int(n_rows) == 0:
            # Still touch the inputs so every rank's autograd graph has the same shape.
            return (a.sum() + b.sum()) * 0.0
        if findings is None or label_targets <= 0.0:
            loss_a = F.cross_entropy(logits_a[rows], labels[rows])
            loss_b = F.cross_entropy(logits_b[rows], labels[rows])
            return (loss_a + loss_b) / 2
        gathered = self._gather_rows(findings)
        # Without local_loss every rank scores the whole gathered batch: its rows are the gathered ones.
        own_rows = findings if (self.local_loss or self.world_size == 1) else gathered
        targets = _label_aware_targets(own_rows, gathered, labels, all_valid, label_targets)
        return (_soft_cross_entropy(logits_a[rows], targets[rows], all_valid)
                + _soft_cross_entropy(logits_b[rows], targets[rows], all_valid)) / 2


def _label_aware_targets(local: torch.Tensor, gathered: torch.Tensor, own: torch.Tensor, valid_columns: torch.Tensor,
                         share: float) -> torch.Tensor:
    """[B_local, B_all] target distributions: 1 - share on the own column, share over valid columns by
    Jaccard similarity of findings (1 between two cases without any; each row's own column included)."""
    a, b = local.float(), gathered.float()
    common = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - common
    alike = torch.where(union > 0, common / union.clamp_min(1.0), torch.ones_like(common))
    alike = alike * valid_columns.unsqueeze(0)
    alike[torch.arange(len(own), device=own.device), own] = 1.0  # a valid row always matches itself
    spread = alike / alike.sum(1, keepdim=True)
    onehot = F.one_hot(own, num_classes=gathered.shape[0]).to(spread.dtype)
    return (1.0 - share) * onehot + share * spread


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, valid_columns: torch.Tensor) -> torch.Tensor:
    # Masked columns hold -inf logits and zero targets: zero their log-probabilities so that 0 * -inf
    # does not turn the sum into NaN.
    log_probs = F.log_softmax(logits, dim=-1).masked_fill(~valid_columns.unsqueeze(0), 0.0)
    return -(targets * log_probs).sum(dim=-1).mean()


class TriModalLoss(nn.Module):
    """Weighted sum of the three pair losses; returns (total, {pair name: value})."""

    def __init__(self, weights: dict[str, float], rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.weights = {k: v for k, v in weights.items() if k != "label_targets"}
        self.label_targets = label_target_shares(weights)
        self.clip = MaskedClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True,
                                   rank=rank, world_size=world_size)

    def forward(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                logit_scale: torch.Tensor, findings: dict[str, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """`embeddings[m]` is [B, D] for every modality m (zeros where absent); `present[m]` is [B] bool;
        `findings[m]` [B, K_m] bool: the labels modality m shows (for label-aware targets)."""
        total = logit_scale * 0.0
        parts: dict[str, float] = {}
        for a, b in PAIRS:
            name = f"{a}_{b}"
            weight = float(self.weights.get(name, 1.0))
            if weight == 0.0:
                continue
            valid = present[a] & present[b]
            shown = findings.get(a) if (findings is not None and b == "text") else None
            term = self.clip.masked_forward(embeddings[a], embeddings[b], valid, logit_scale, shown,
                                            self.label_targets.get(name, 0.0))
            parts[name] = float(term.detach())
            total = total + weight * term
        return total, parts
