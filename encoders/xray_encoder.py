"""The chest X-ray tower: open_clip's VisionTransformer with a 1-channel patch embedding and DropKey.

Radiographs are grey, so the patch embedding takes one channel instead of tiling the image to RGB
(a third of the first layer's work, and no fake colour statistics). CLS pooling; open_clip's own
output projection is removed because the joint model owns one projection head per modality.

`stem: "conv"` replaces the one strided patch convolution by log2(patch) stride-2 3x3 convolutions
(Xiao et al. 2021, "Early convolutions help transformers see better"). The token grid, the
transformer and its attention are unchanged, so explanations read the same [gh, gw] patch grid. Why:
a plain ViT learns local texture slowly. Trained on the labels directly for 4 minutes on 2 cores, the
tiny preset's ViT read consolidation at AUROC 0.73 and atelectasis at 0.70 after 36k films; with the
stem, 0.86 and 0.92 after 23k (pneumothorax stayed near 0.5 in that short run). It costs about 40 %
more X-ray FLOPs.

`registers: N` appends N learned register tokens after the patch tokens (Darcet et al. 2024, "Vision
transformers need registers"). Why: a ViT trained long enough starts to use a few low-information
patch tokens as scratch space for global state; their norms grow far above the rest and attention
(and so every attention-based explanation) lands on them. Measured here: the tiny preset trained for
77 minutes (session 15, README) had tokens of norm 59-97 entering its last block against 34-42 after 17
minutes, one grid column reading 93-97, and its X-ray pointing game fell from 0.75 to 0.52-0.56.
Registers are meant to give that state a place of its own. On `tiny` they did so only in part: the
same 77-minute run with 4 registers (session 16) pointed at 0.65-0.66, and row 1 and a few lower
cells still held the highest-norm tokens (104-143 over the grid, the registers 120-145); `base` has 4 on the paper's evidence for
ViT-B-size models. They have no position (no positional embedding) and no place on the film, so
explanations read the patch tokens 1..gh*gw only. 0 (the default, and every checkpoint trained
before session 16) runs open_clip's forward unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from encoders.attention import install_dropkey
from encoders.errors import InvalidInputError


class XrayEncoder(nn.Module):
    """[B, 1, S, S] normalised pixels -> [B, width] CLS features."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.image_size = int(cfg["image_size"])
        self.width = int(cfg["width"])
        self.vit = VisionTransformer(
            image_size=self.image_size,
            patch_size=int(cfg["patch_size"]),
            width=self.width,
            layers=int(cfg["layers"]),
            heads=int(cfg["heads"]),
            mlp_ratio=float(cfg["mlp_ratio"]),
            output_dim=self.width,
            pool_type="tok",
            block_type="custom",
        )
        patch = int(cfg["patch_size"])
        if cfg.get("stem", "patch") == "conv":
            self.vit.conv1 = conv_stem(self.width, patch)
        else:
            self.vit.conv1 = nn.Conv2d(1, self.width, kernel_size=patch, stride=patch, bias=False)
        self.vit.proj = None
        registers = int(cfg.get("registers", 0))
        # Same scale as open_clip's class embedding.
        self.register_tokens = (nn.Parameter(self.width ** -0.5 * torch.randn(registers, self.width))
                                if registers else None)
        install_dropkey(self.vit.transformer.resblocks, self.width, int(cfg["heads"]),
                        float(cfg["dropkey_start"]), float(cfg["dropkey_end"]))

    @property
    def num_registers(self) -> int:
        return 0 if self.register_tokens is None else int(self.register_tokens.shape[0])

    @property
    def num_tokens(self) -> int:
        """Tokens per image: CLS, the gh * gw patch tokens in row-major order, then the registers; the N
        of captured [B, H, N, N] attention."""
        grid = self.vit.grid_size
        return grid[0] * grid[1] + 1 + self.num_registers

    def token_geometry(self) -> tuple[float, float]:
        """(origin, stride) in model-input pixels: token (r, c) of the patch grid is centred on pixel
        (origin + stride * r, origin + stride * c), read off the stem's convolutions.

        Why explanations need it: a strided patch convolution centres token o on its own patch
        (origin = (patch - 1) / 2), but the conv stem's stride-2 3x3 convolutions with padding 1 centre
        it on the patch's top-left corner (origin 0): its receptive field spans pixels
        [patch * o - patch + 1, patch * o + patch - 1], half of each neighbouring patch. Measured on the
        session-9 tiny checkpoint, a 16 px cell around that centre holds 27-29 % of the token's input
        gradient against 9-16 % for its nominal patch. A map drawn on the nominal patches sits half a
        patch (8 px at 128 px) down and right of what the tokens saw.
        """
        scale, origin = 1.0, 0.0  # input centre = scale * token index + origin, built from the output side
        for conv in reversed([m for m in self.vit.conv1.modules() if isinstance(m, nn.Conv2d)]):
            (stride, _), (kernel, _), (padding, _), (dilation, _) = conv.stride, conv.kernel_size, conv.padding, conv.dilation
            scale, origin = stride * scale, stride * origin + dilation * (kernel - 1) / 2 - padding
        return origin, scale

    def pixel_tokens(self) -> np.ndarray:
        """[image_size] int: the token row (and column) whose centre is nearest to each pixel row (column).

        The cells these indices make are the regions a patch-grid explanation refers to; edge cells
        reach to the film's border (with the conv stem the first is half a patch, the last one and a half).
        """
        origin, stride = self.token_geometry()
        grid = self.vit.grid_size[0]
        pixels = np.arange(self.image_size, dtype=np.float64)
        return np.clip(np.floor((pixels - origin) / stride + 0.5), 0, grid - 1).astype(np.int64)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 1 or tuple(pixels.shape[2:]) != (self.image_size,) * 2:
            raise InvalidInputError(
                "pixels",
                f"expected [B, 1, {self.image_size}, {self.image_size}], got {list(pixels.shape)}; "
                "run each image through bundle.preprocess_xray first",
            )
        if self.register_tokens is None:
            return self.vit(pixels)
        # open_clip's VisionTransformer._embeds with the registers added before ln_pre, as timm does;
        # patch dropout is not configured here (it would drop registers as if they were patches).
        vit = self.vit
        x = vit.conv1(pixels).flatten(2).transpose(1, 2)                          # [B, gh * gw, width]
        cls = vit.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + vit.positional_embedding.to(x.dtype)
        registers = self.register_tokens.to(x.dtype).expand(x.shape[0], -1, -1)
        x = vit.transformer(vit.ln_pre(torch.cat([x, registers], dim=1)))
        pooled, _ = vit._pool(x)
        return pooled


class ConvStem(nn.Sequential):
    """The stem's layers, run on CPU batches in chunks of `CPU_CHUNK` images.

    Why: half of the stem's time is memory-bound passes (GELU, GroupNorm) over activations that
    outgrow the CPU caches past ~8 images of 128 px; measured on the 2-core machine, stem images/s
    at batch 8 / 32: 912 / 565, and 903 at batch 32 in chunks of 8. Per-image maths (GroupNorm
    normalises each image on its own), so the output is the same; GPUs get the whole batch.
    """

    CPU_CHUNK = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = super().forward
        if x.device.type != "cpu" or x.shape[0] <= self.CPU_CHUNK:
            return run(x)
        return torch.cat([run(part) for part in x.split(self.CPU_CHUNK)])


def conv_stem(width: int, patch: int) -> nn.Sequential:
    """[B, 1, S, S] -> [B, width, S / patch, S / patch]: stride-2 3x3 convolutions, channels doubling up
    to `width`, then a 1x1 projection (Xiao et al. 2021). GroupNorm, not BatchNorm: checkpoints store
    parameters only, and a served embedding must not depend on the other images of its batch."""
    steps = patch.bit_length() - 1
    channels = [max(8, width >> (steps - i)) for i in range(1, steps + 1)]
    layers: list[nn.Module] = []
    previous = 1
    for out in channels:
        layers += [nn.Conv2d(previous, out, kernel_size=3, stride=2, padding=1, bias=False),
                   nn.GroupNorm(min(8, out), out), nn.GELU()]
        previous = out
    layers.append(nn.Conv2d(previous, width, kernel_size=1))
    return ConvStem(*layers)
