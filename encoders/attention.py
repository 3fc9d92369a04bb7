"""Self-attention with DropKey and optional capture of the attention probabilities.

DropKey (Li et al., CVPR 2023) masks attention *logits* at random before the softmax, in training
only, instead of dropping probabilities after it: the row still sums to one, so no rescaling noise
reaches the values. MoRE applies it with one constant ratio; here the ratio moves linearly from
`start` (first layer) to `end` (last layer), the "linear attention dropping" schedule.

The module keeps open_clip's `Attention` parameter names (in_proj_weight, in_proj_bias, out_proj), so it
drops into open_clip's `CustomResidualAttentionBlock` in place of the stock attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear_drop_ratios(start: float, end: float, layers: int) -> list[float]:
    """Per-layer DropKey ratios, linear from `start` at layer 0 to `end` at the last layer."""
    if layers == 1:
        return [start]
    return [start + (end - start) * i / (layers - 1) for i in range(layers)]


class DropKeyAttention(nn.Module):
    """Multi-head self-attention (batch first) with DropKey and attention capture."""

    def __init__(self, dim: int, num_heads: int, drop_ratio: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.drop_ratio = drop_ratio
        self.in_proj_weight = nn.Parameter(torch.empty(dim * 3, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(dim * 3))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        # Set by TriBindModel.capture_attention(): a list to append [B, H, N, N] probabilities to.
        self.captured: list[torch.Tensor] | None = None
        self.keep_graph = False

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        dropkey = self.training and self.drop_ratio > 0.0
        if not dropkey and self.captured is None:
            # The fused kernel gives the same result without materialising the N x N matrix.
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            logits = (q * self.scale) @ k.transpose(-1, -2)
            if attn_mask is not None:
                logits = logits + attn_mask
            if dropkey:
                dropped = torch.rand_like(logits) < self.drop_ratio
                # Keep key 0 (the CLS token) for every query: a row of all -inf would make NaNs.
                dropped[..., 0] = False
                logits = logits.masked_fill(dropped, float("-inf"))
            probs = logits.softmax(dim=-1)
            if self.captured is not None:
                self.captured.append(probs if self.keep_graph else probs.detach())
            out = probs @ v
        out = out.transpose(1, 2).reshape(batch, tokens, channels)
        return self.out_proj(out)


def install_dropkey(resblocks: nn.ModuleList, width: int, heads: int, start: float, end: float) -> None:
    """Replace each open_clip block's `.attn` with a `DropKeyAttention` on the linear schedule."""
    for block, ratio in zip(resblocks, linear_drop_ratios(start, end, len(resblocks))):
        block.attn = DropKeyAttention(width, heads, ratio)


def attention_modules(module: nn.Module) -> list[DropKeyAttention]:
    """The DropKey attentions of a tower, in forward (layer) order."""
    return [m for m in module.modules() if isinstance(m, DropKeyAttention)]
