"""Train-time augmentation of prepared X-ray and ECG batches (`tribind train --augment`).

Why: a 17-minute tiny run sees each of its 6,000 phantom cases about 11 times, and by then it has
partly learned the cases rather than the findings. The bundled checkpoint of session 4 retrieved the
ECG of an X-ray (r@10) at 13.5x chance on its own training cases and at 9.0-9.8x on held-out ones.
Changes that keep every finding where it is, but make two views of one case differ, leave less to
memorise.

Every change keeps the labels true:
- X-ray: a shift of up to `xray_shift` pixels in each direction (edge pixels repeated, no wrap-round,
  so a left effusion stays on the left and nothing new appears) and a small brightness/contrast change
  in normalised units. No flips: the phantom, like a real PA film, has sides (left vs right effusion,
  heart on the left).
- ECG: a circular shift in time (the record is a run of beats, so the one seam it adds, where the
  record's end meets its start, falls within the same rhythm) and one gain per record. The gain is
  small next to the phantom's own electrode-gain spread (log-normal, sigma 0.15 and 0.22), so LVH
  voltage stays readable; intervals, rates and morphology are untouched.

Measured on the phantom (README, Training), it did not help. With the shift, X-ray<->ECG r@10 fell
from 9.8x to 6.5x chance. Without it, every target figure (zero-shot, label_p@10, X-ray<->ECG r@10)
stayed at or below the unaugmented run's. So it is off by default. It is kept for real data, where
positioning, exposure and electrode gain vary in ways the phantom's 6,000 cases do not cover (not
measured there yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    xray_shift: int = 6              # pixels, each direction, at the model's input size
    xray_contrast: float = 0.1       # x * (1 + U(-c, c))
    xray_brightness: float = 0.1     # + U(-b, b), in normalised (z-scored) units
    ecg_max_shift_s: float = 2.0     # circular time shift, seconds
    ecg_gain: float = 0.05           # x * (1 + U(-g, g)), one gain per record

    def xray(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B, 1, S, S] -> the same shape, each film shifted and re-levelled on its own."""
        batch, _, size, _ = pixels.shape
        s = self.xray_shift
        out = pixels
        if s > 0:
            padded = F.pad(pixels, (s, s, s, s), mode="replicate")
            offsets = torch.randint(0, 2 * s + 1, (batch, 2), generator=generator).tolist()
            out = torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets)])
        scale = 1 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * self.xray_contrast
        shift = (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * self.xray_brightness
        return out * scale.to(out) + shift.to(out)

    def ecg(self, signals: torch.Tensor, sample_rate: float, generator: torch.Generator) -> torch.Tensor:
        """[B, 12, T] -> the same shape, each record rolled in time and scaled once."""
        batch, _, samples = signals.shape
        most = min(int(round(self.ecg_max_shift_s * sample_rate)), samples - 1)
        shifts = torch.randint(-most, most + 1, (batch,), generator=generator).tolist() if most > 0 else [0] * batch
        out = torch.stack([torch.roll(signals[i], shifts[i], dims=-1) for i in range(batch)])
        gain = 1 + (torch.rand(batch, 1, 1, generator=generator) * 2 - 1) * self.ecg_gain
        return out * gain.to(out)
