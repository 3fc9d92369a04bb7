"""Token relevance from captured attention: rollout (baseline) and Chefer et al. 2021 (default).

Both read the per-layer attention probabilities that `TriBindModel.capture_attention` collects
([B, H, N, N], layer order) and return a relevance matrix R [B, N, N]: row i says how much each input
token contributed to output token i. What the pooled embedding saw is then a row (CLS pooling) or the
mean of the real-token rows (mean pooling).

- Rollout (Abnar & Zuidema 2020): heads averaged, the residual path added as 0.5 I, rows renormalised,
  layers multiplied. It ignores the target, so it is the same map for every label: a baseline.
- Chefer, Gur & Wolf 2021 ("Generic attention-model explainability ...", ICCV), rule for
  self-attention: R <- R + mean_h[(dS/dA ⊙ A)^+] R, starting from I. The gradient of the explained
  score S (here the cosine to the target) makes the map target-specific; the positive part keeps the
  evidence *for* the target.
"""

from __future__ import annotations

import torch

METHODS: tuple[str, ...] = ("chefer", "rollout")
DEFAULT_METHOD = "chefer"


def _identity(batch: int, tokens: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(tokens, dtype=like.dtype, device=like.device).expand(batch, tokens, tokens).clone()


def chefer_relevance(attentions: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
    """[B, H, N, N] probabilities and their gradients per layer -> R [B, N, N]."""
    batch, _, tokens, _ = attentions[0].shape
    relevance = _identity(batch, tokens, attentions[0])
    for attention, gradient in zip(attentions, gradients):
        cam = (gradient * attention).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return relevance


def attention_rollout(attentions: list[torch.Tensor]) -> torch.Tensor:
    """[B, H, N, N] probabilities per layer -> R [B, N, N] (rows sum to one)."""
    batch, _, tokens, _ = attentions[0].shape
    eye = _identity(batch, tokens, attentions[0])
    relevance = eye.clone()
    for attention in attentions:
        mixed = 0.5 * attention.mean(dim=1) + 0.5 * eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        relevance = mixed @ relevance
    return relevance


def cls_readout(relevance: torch.Tensor) -> torch.Tensor:
    """CLS-pooled towers: relevance of the input tokens 1.. for the CLS output, [B, N - 1]."""
    return relevance[:, 0, 1:]


def mean_pool_readout(relevance: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean-pooled towers: the real-token rows averaged, [B, N] (zero at padding).

    The identity (each token's own residual path) is taken out first: under mean pooling it adds the
    same 1/n to every token, which carries no information and flattens the picture.
    """
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    mask = attention_mask.to(relevance.dtype)
    rows = ((relevance - eye) * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    return rows.clamp(min=0) * mask


def query_row_readout(prefix_relevance: torch.Tensor, top_attention: torch.Tensor,
                      top_gradient: torch.Tensor | None, attention_mask: torch.Tensor,
                      row_weights: torch.Tensor | None = None) -> torch.Tensor:
    """"mean_query" / "sentence_query" text towers: relevance of the input tokens for the pooled row, [B, N].

    Each pooled row q is the top layer run on one query row, the mean of the rows below it reads
    (`row_weights` [B, Q, N], 0/1; default one row over every real token), attending
    ([B, H, Q, N] `top_attention`) over them. Its relevance is the mean of those token rows of
    `prefix_relevance` (identity taken out, as in `mean_pool_readout`) plus what the top layer's
    attention adds: Chefer's rule, (dS/dA ⊙ A)^+ averaged over heads, times the rows it reads; with
    no gradient (rollout), half the head-averaged attention, as rollout mixes in the residual. The
    embedding is the mean of its rows (one per sentence), and so is the relevance.
    """
    mask = attention_mask.to(prefix_relevance.dtype)
    if row_weights is None:
        row_weights = mask[:, None]
    row_weights = row_weights.to(prefix_relevance.dtype)
    eye = torch.eye(prefix_relevance.shape[-1], dtype=prefix_relevance.dtype, device=prefix_relevance.device)
    counts = row_weights.sum(dim=-1, keepdim=True)
    base = ((row_weights @ (prefix_relevance - eye)) / counts.clamp_min(1.0)).clamp(min=0) * mask[:, None]
    if top_gradient is not None:
        per_row = base + (top_gradient * top_attention).clamp(min=0).mean(dim=1) @ prefix_relevance
    else:
        per_row = 0.5 * base + 0.5 * (top_attention.mean(dim=1) @ prefix_relevance)
    present = counts.gt(0).to(per_row.dtype)                                      # [B, Q, 1]
    pooled = (per_row * present).sum(dim=1) / present.sum(dim=1).clamp_min(1.0)
    return pooled.clamp(min=0) * mask
