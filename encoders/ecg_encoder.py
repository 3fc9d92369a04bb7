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

`rhythm_token: true` appends one more token, read from the record's amplitude spectrum
(`EcgRhythmToken`). Why: rate and regularity are properties of the whole record, and a contrastive
model trained for minutes does not learn to count beats from patch tokens (the model before it read
sinus bradycardia at AUROC 0.61; a linear probe on its ECG embedding at 0.65). A periodic
beat train puts its energy at the heart rate and its harmonics, an irregular one smears it; a linear
probe on the log spectrum reads bradycardia, tachycardia and atrial fibrillation at AUROC 0.99-1.0 on
phantom records. The token makes rhythm easy to read; whether training aligns it with the reports is
the loss weights' business (README.md, design notes). It sits after the time tokens, so token i in
1..n_patches still covers one time patch; explanations read time relevance from those tokens only.
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
        self.n_patches = n_patches
        self.rhythm = (EcgRhythmToken(self.width, float(cfg["sample_rate"]), self.n_samples)
                       if cfg.get("rhythm_token", False) else None)
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
        """Tokens per record: CLS, then token i in 1..n_patches covering samples [(i-1)*patch, i*patch),
        then the rhythm token when the preset has one."""
        return self.n_patches + 1 + (self.rhythm is not None)

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
        absent = ((~present).to(x.dtype) @ self.absent_lead).unsqueeze(1)  # [B, 1, width]
        x = x + absent
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if self.rhythm is not None:
            rhythm = self.rhythm(signals, present).to(x.dtype).unsqueeze(1) + absent
            x = torch.cat([x, rhythm], dim=1)
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


class EcgRhythmToken(nn.Module):
    """([B, 12, T] mV, [B, 12] bool) -> [B, width]: one token from the lead-averaged log amplitude spectrum.

    The band is fixed in Hz, so presets with other rates and lengths keep its meaning: 0.5 Hz (the
    preprocessing band-pass's lower edge; 30 bpm) to 25 Hz (the harmonics that carry P-wave and QRS
    shape; above lie muscle noise and mains). Amplitudes are in mV per bin (|rfft| * 2 / T), logged
    above a 1 uV floor because spectra span decades; the mean runs over present leads only, since rate
    and rhythm are the same in every lead and a missing lead must not read as a silent one.
    """

    LOW_HZ = 0.5
    HIGH_HZ = 25.0
    FLOOR_MV = 1e-3

    def __init__(self, width: int, sample_rate: float, n_samples: int) -> None:
        super().__init__()
        freqs = torch.fft.rfftfreq(n_samples, d=1.0 / sample_rate)
        band = ((freqs >= self.LOW_HZ) & (freqs <= min(self.HIGH_HZ, sample_rate / 2))).nonzero().flatten()
        self.first_bin, self.n_bins = int(band[0]), int(band.numel())
        # The band's DFT as one [T, 2 * bins] matrix instead of torch.fft: the same numbers, and it
        # exports to ONNX (opset 17 has no rfft) and runs on any backend. Angles are reduced mod T in
        # float64 first, since k * n reaches ~10^6 on `base`. Not persistent: rebuilt from the config.
        k = band.to(torch.float64)[None, :]
        n = torch.arange(n_samples, dtype=torch.float64)[:, None]
        angle = 2 * torch.pi * torch.remainder(n * k, n_samples) / n_samples
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1) * (2.0 / n_samples)
        self.register_buffer("dft", basis.to(torch.float32), persistent=False)
        self.norm = LayerNorm(self.n_bins)
        self.mlp = nn.Sequential(nn.Linear(self.n_bins, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, signals: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast: bf16 keeps 8 bits of mantissa, too few for a 1000-term sum.
        with torch.autocast(device_type=signals.device.type, enabled=False):
            parts = signals.float() @ self.dft                     # [B, 12, 2 * bins], mV per bin
            power = parts[..., : self.n_bins] ** 2 + parts[..., self.n_bins:] ** 2
            # log|X| as 0.5 * log(|X|^2) above the floor: no sqrt at 0, whose gradient (inf * 0) would
            # put NaN into input-gradient explanations of records with an absent (zeroed) lead.
            log_amplitude = 0.5 * power.clamp_min(self.FLOOR_MV ** 2).log()
            weights = present.float().unsqueeze(-1)
            mean = (log_amplitude * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.mlp(self.norm(mean))
