"""TriBindModel: three towers, one linear head each into the shared space, one learnable temperature."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoders.attention import attention_modules
from encoders.ecg_encoder import EcgEncoder
from encoders.text_encoder import TextEncoder
from encoders.xray_encoder import XrayEncoder


class TriBindModel(nn.Module):
    """X-ray, ECG and report encoders whose outputs are L2-normalised vectors in one space."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        dim = int(config["embed_dim"])
        self.embed_dim = dim
        self.xray = XrayEncoder(config["xray"])
        self.ecg = EcgEncoder(config["ecg"])
        self.text = TextEncoder(config["text"])
        self.xray_proj = nn.Linear(self.xray.width, dim, bias=False)
        self.ecg_proj = nn.Linear(self.ecg.width, dim, bias=False)
        self.text_proj = nn.Linear(self.text.width, dim, bias=False)
        # CLIP's init (1/0.07) and clamp (100): without the clamp the temperature runs away early on.
        self.max_logit_scale = float(config.get("max_logit_scale", math.log(100.0)))
        self.logit_scale = nn.Parameter(torch.tensor(float(config.get("init_logit_scale", math.log(1 / 0.07)))))

    def encode_xray(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 1, S, S] -> [B, D], unit norm."""
        return F.normalize(self.xray_proj(self.xray(pixels)), dim=-1)

    def encode_ecg(self, signals: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        """[B, 12, T] mV and [B, 12] bool -> [B, D], unit norm."""
        return F.normalize(self.ecg_proj(self.ecg(signals, lead_mask)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    cache_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids and mask from `bundle.tokenizer` -> [B, D], unit norm (cache_rows: see TextEncoder)."""
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask, cache_rows)), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped: the inverse temperature of every similarity logit."""
        return self.logit_scale.clamp(0.0, self.max_logit_scale).exp()

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embeds whichever modalities the batch carries (keys as produced by training's collate)."""
        out: dict[str, torch.Tensor] = {"logit_scale": self.scale()}
        if "pixels" in batch:
            out["xray"] = self.encode_xray(batch["pixels"])
        if "signals" in batch:
            out["ecg"] = self.encode_ecg(batch["signals"], batch["lead_mask"])
        if "input_ids" in batch:
            out["text"] = self.encode_text(batch["input_ids"], batch["attention_mask"], batch.get("text_cache_rows"))
        return out

    @contextlib.contextmanager
    def capture_attention(self, keep_graph: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Collect per-layer attention probabilities of every encode_* call made inside the block.

        Yields {"xray": [...], "ecg": [...], "text": [...]}, each a list of [B, H, N, N] tensors in
        layer order (appended per call, so two calls give 2 x layers entries). Outputs are unchanged.
        `keep_graph=True` keeps the autograd graph so gradients w.r.t. the probabilities can be taken
        (Chefer et al. 2021); the text tower then runs its frozen layers with autograd too.
        """
        captured: dict[str, list[torch.Tensor]] = {"xray": [], "ecg": [], "text": []}
        towers = {"xray": attention_modules(self.xray), "ecg": attention_modules(self.ecg)}
        for name, modules in towers.items():
            for module in modules:
                module.captured = captured[name]
                module.keep_graph = keep_graph
        try:
            with self.text.capture_attention(captured["text"], keep_graph):
                yield captured
        finally:
            for modules in towers.values():
                for module in modules:
                    module.captured = None
                    module.keep_graph = False
