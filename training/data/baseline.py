"""The random-init baseline printed beside every real-data figure (evaluation and fine-tuning).

Its weights come from their own seed stream (BASELINE_SEED_OFFSET + seed), so the baseline never
coincides with a checkpoint that was saved straight after a seed-0 initialisation, and the caller's
global RNG state is left as it was.
"""

from __future__ import annotations

from typing import Any

import torch

BASELINE_SEED_OFFSET = 10_000


def random_init_bundle(config: dict[str, Any], seed: int = 0):
    """A freshly initialised bundle of the same preset (same preprocessing and tokenizer)."""
    from encoders import create_model

    state = torch.random.get_rng_state()
    torch.manual_seed(BASELINE_SEED_OFFSET + seed)
    try:
        bundle = create_model(config)
    finally:
        torch.random.set_rng_state(state)
    bundle.model.eval()
    return bundle
