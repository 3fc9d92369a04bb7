"""Shared steps of the text-tower tests (LoRA made to matter; a forward/backward with or without the prefix cache)."""

from __future__ import annotations

import torch


def make_adapters_matter(text: torch.nn.Module, std: float = 0.2) -> None:
    """LoRA B starts at zero, which would hide any bug in the adapters' path: draw it at random."""
    for name, p in text.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=std)


def output_and_lora_grads(text: torch.nn.Module, tokens: dict[str, torch.Tensor], weights: torch.Tensor,
                          cached: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The tower's output on `tokens` and the gradients of (output * weights).sum(), with the prefix
    cache on (filled by a first pass) or off; the same seed before the measured pass gives both runs
    the same dropout masks."""
    text.enable_prefix_cache(cached)
    if cached:
        text(**tokens)  # fills the cache
    text.zero_grad()
    torch.manual_seed(5)
    out = text(**tokens)
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in text.named_parameters() if p.requires_grad}
