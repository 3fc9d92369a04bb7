"""The 12-lead ECG tower: a transformer over time patches with a lead-aware patch embedding.

Tokenisation (a deliberate trade-off, see README.md): one token per time patch of all 12
leads, embedded by a Conv1d whose kernel has separate weights per lead, so every token knows which
lead contributed what. The alternative, one token per (lead, patch), is 12x more tokens and ~12-150x
more attention work; on a 2-core CPU that is the difference between a tiny model that trains in
minutes and one that does not. The cost: attention maps resolve time, not leads, so lead-level
explanations need input gradients rather than attention.

Missing leads (lead_mask False) are zeroed and a learned per-lead "absent" vector is added to every
token, so the model can tell "lead not recorded" from "flat lead". In training, `lead_dropout`
hides random leads to teach that.

Amplitudes stay in mV (no per-record normalisation: voltage carries LVH); the patch embedding sees
raw mV.

`stem: "patch_conv"` adds a convolutional event branch to the linear patch embedding, on the same
token grid (`EcgPatchConvEmbedding`). Why: a linear patch embedding cannot say "a QRS is somewhere
in this patch" (the QRS sits at any offset, with either polarity, so its energy is not a linear
feature of the samples), and rate, rhythm and PR interval are counts and distances of such events.
The branch (stride-1 first layer, GELUs, a receptive field of 670 ms on `tiny`, enough for a P wave
and its QRS with first-degree block) gives shift-tolerant event detectors before the first
attention. Its last layer starts at zero (zero-init residual, Goyal et al. 2017), so training starts
from the plain patch model and only adds what helps; no normalisation layers, which would divide
out the voltage LVH is read from. Measured, see README.md (ECG tower).
"""

from __future__ import annotations

from typing import Any

import torch
from open_clip.transformer import LayerNorm, Transformer
from torch import nn

from encoders.attention import install_dropkey
from encoders.errors import InvalidInputError

N_LEADS = 12


class EcgEncoder(nn.Module):
    """([B, 12, T] mV, [B, 12] bool lead mask) -> [B, width] CLS features."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.width = int(cfg["width"])
        self.patch = int(cfg["patch_samples"])
        self.n_samples = int(round(cfg["sample_rate"] * cfg["seconds"]))
        self.lead_dropout = float(cfg.get("lead_dropout", 0.0))
        n_patches = self.n_samples // self.patch
        scale = self.width ** -0.5
        if cfg.get("stem", "patch") == "patch_conv":
            self.patch_embed = EcgPatchConvEmbedding(self.width, self.patch)
        else:
            self.patch_embed = nn.Conv1d(N_LEADS, self.width, kernel_size=self.patch, stride=self.patch)
        self.absent_lead = nn.Parameter(scale * torch.randn(N_LEADS, self.width))
        self.class_embedding = nn.Parameter(scale * torch.randn(self.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n_patches + 1, self.width))
        self.ln_pre = LayerNorm(self.width)
        self.transformer = Transformer(
            self.width, int(cfg["layers"]), int(cfg["heads"]), float(cfg["mlp_ratio"]), block_type="custom",
        )
        install_dropkey(self.transformer.resblocks, self.width, int(cfg["heads"]),
                        float(cfg["dropkey_start"]), float(cfg["dropkey_end"]))
        self.ln_post = LayerNorm(self.width)

    @property
    def num_tokens(self) -> int:
        """Tokens per record including CLS; token i >= 1 covers samples [(i-1)*patch, i*patch)."""
        return self.n_samples // self.patch + 1

    def _check(self, signals: torch.Tensor, lead_mask: torch.Tensor) -> None:
        if signals.ndim != 3 or signals.shape[1] != N_LEADS or signals.shape[2] != self.n_samples:
            raise InvalidInputError(
                "signals",
                f"expected [B, 12, {self.n_samples}] in mV, got {list(signals.shape)}; "
                "run each record through bundle.preprocess_ecg first",
            )
        if lead_mask.shape != signals.shape[:2]:
            raise InvalidInputError("lead_mask", f"expected [B, 12] booleans, got {list(lead_mask.shape)}")
        if not bool(lead_mask.any(dim=1).all()):
            raise InvalidInputError("lead_mask", "a record has no leads present; drop it or send at least one lead")

    def forward(self, signals: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        self._check(signals, lead_mask)
        present = lead_mask.to(torch.bool)
        if self.training and self.lead_dropout > 0.0:
            hide = torch.rand(present.shape, device=present.device) < self.lead_dropout
            kept = present & ~hide
            # A record must keep at least one lead; fall back to its original mask where all were hidden.
            present = torch.where(kept.any(dim=1, keepdim=True), kept, present)
        signals = signals * present.unsqueeze(-1).to(signals.dtype)
        x = self.patch_embed(signals).transpose(1, 2)  # [B, n_patches, width]
        absent = (~present).to(x.dtype) @ self.absent_lead  # [B, width]
        x = x + absent.unsqueeze(1)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0])


def stem_strides(patch: int) -> list[int]:
    """patch_samples as a product of strides of at most 5 where it factors that way (25 -> [5, 5],
    50 -> [2, 5, 5]); a prime factor above 5 stays one stride."""
    factors, n, f = [], patch, 2
    while n > 1:
        while n % f == 0:
            factors.append(f)
            n //= f
        f += 1
    strides: list[int] = []
    for factor in sorted(factors, reverse=True):
        for i, s in enumerate(strides):
            if s * factor <= 5:
                strides[i] = s * factor
                break
        else:
            strides.append(factor)
    return sorted(strides)


class EcgPatchConvEmbedding(nn.Module):
    """[B, 12, T] mV -> [B, width, T / patch]: the linear patch embedding plus a convolutional branch.

    The branch: a stride-1 kernel-7 convolution at full rate, one convolution per stride of
    `stem_strides(patch)` (kernel 2 * stride + 1, so neighbouring windows overlap), channels growing to
    `width`, then a zero-initialised 1x1 projection. Token i still covers samples
    [i * patch, (i + 1) * patch), widened by the branch's overlap.
    """

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(N_LEADS, width, kernel_size=patch, stride=patch)
        strides = stem_strides(patch)
        channels = [max(16, width >> (len(strides) - i)) for i in range(1, len(strides) + 1)]
        first = max(16, channels[0] // 2)
        layers: list[nn.Module] = [nn.Conv1d(N_LEADS, first, kernel_size=7, padding=3), nn.GELU()]
        previous = first
        for stride, out in zip(strides, channels):
            layers += [nn.Conv1d(previous, out, kernel_size=2 * stride + 1, stride=stride, padding=stride), nn.GELU()]
            previous = out
        projection = nn.Conv1d(previous, width, kernel_size=1)
        nn.init.zeros_(projection.weight)
        nn.init.zeros_(projection.bias)
        self.events = nn.Sequential(*layers, projection)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        return self.linear(signals) + self.events(signals)
