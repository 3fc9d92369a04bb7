"""Learning-rate schedule and optimizer groups (open_clip's recipe: AdamW, linear warm-up, cosine decay)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  final_fraction: float = 0.05,
                  time_fraction: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to `final_fraction` of it at `total_steps`.

    With `time_fraction` (elapsed / time budget) the decay runs on whichever is further along, steps
    or time, so a run capped by `--max-minutes` still ends on a decayed rate instead of mid-schedule.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if time_fraction is not None:
            progress = max(progress, time_fraction())
        progress = min(1.0, progress)
        return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: not on norms, biases, embeddings, register tokens (learned
    inputs like the class embedding) or the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "embedding" in name or "register_tokens" in name or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
