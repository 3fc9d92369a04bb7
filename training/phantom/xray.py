"""Procedural frontal (PA) chest radiograph with a pixel mask per finding.

Anatomy is defined analytically in body coordinates (x to the patient's LEFT, i.e. image right as on a
PA film; y downward; the inner thoracic half-width is W), then sampled on the pixel grid through a
per-case positioning transform (zoom, shift, small rotation). Shapes are soft-edged (tanh of a distance)
so a 128 px render is anti-aliased without rendering large and downscaling. Thin structures (vessels,
Kerley lines) are drawn with PIL at the target size.

Brightness is built as "film density" (0 = black, 1 = white) and only at the end passed through a
random exposure (level, contrast, gamma) and detector noise, so global image statistics say little
about the findings (the difficulty guard).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from training.phantom.labels import ALL_LABELS

W = 0.72  # inner thoracic half-width in body units; CTR = heart half-width / W

_SIZE_EFFUSION = {"small": 0.24, "moderate": 0.34, "large": 0.48}
_SIZE_PTX = {"small": 0.1, "moderate": 0.15, "large": 0.22}
_EDEMA = {"mild": 0.2, "moderate": 0.27, "severe": 0.34}


def _soft(d: np.ndarray, eps: float) -> np.ndarray:
    """1 where d > eps, 0 where d < -eps, a smoothstep between (cheaper than tanh on 512x512)."""
    t = np.clip(d * (0.5 / eps) + 0.5, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class _Frame:
    """Body <-> pixel mapping of one film."""

    def __init__(self, size: int, zoom: float, shift: tuple[float, float], angle: float) -> None:
        self.size, self.zoom, self.shift = size, zoom, np.array(shift)
        self.c, self.s = np.cos(angle), np.sin(angle)
        p = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        px, py = np.meshgrid(p - shift[0], p - shift[1])
        self.x = (self.c * px + self.s * py) / zoom
        self.y = (-self.s * px + self.c * py) / zoom
        self.eps = 2.2 / size / zoom  # ~1 px soft edge

    def to_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bx, by = np.asarray(x) * self.zoom, np.asarray(y) * self.zoom
        px = self.c * bx - self.s * by + self.shift[0]
        py = self.s * bx + self.c * by + self.shift[1]
        return (px + 1) / 2 * self.size - 0.5, (py + 1) / 2 * self.size - 0.5

    def px_per_unit(self) -> float:
        return self.size * self.zoom / 2


class _Anatomy:
    """Analytic geometry of one thorax."""

    def __init__(self, attrs: dict, labels: set[str], rng: np.random.Generator) -> None:
        self.habitus = attrs["habitus"]
        insp = rng.uniform(-0.06, 0.06)  # depth of inspiration moves both domes
        self.dome = {-1: 0.44 + insp, 1: 0.48 + insp + rng.uniform(-0.01, 0.02)}
        if attrs.get("atelectasis_side"):  # volume loss pulls the hemidiaphragm up
            self.dome[_side_sign(attrs["atelectasis_side"])] -= 0.08
        self.ctr = attrs["ctr"]
        self.heart_a = self.ctr * W
        self.heart_cx = 0.3 * self.heart_a + rng.uniform(-0.02, 0.02)
        self.heart_cy = min(self.dome.values()) - 0.06
        self.heart_b = 0.36 + 0.3 * (self.heart_a - 0.3)
        # Heart tilt follows the anatomical axis (the ECG's frontal QRS axis): a horizontal heart
        # (leftward axis) leans its apex out to the left, i.e. more shear; 45 deg -> 0.35.
        axis = attrs.get("heart_axis_deg", 45.0)
        self.shear = float(np.clip(0.35 + 0.005 * (45.0 - axis), 0.1, 0.7)) + rng.uniform(-0.02, 0.02)
        self.hilum_y = -0.16 + rng.uniform(-0.03, 0.03)
        self._grid_y = None

    def lateral(self, y):
        if y is self._grid_y:  # the full-grid field is needed several times per film; pow is slow
            return self._grid_lateral
        return W * (0.5 + 0.5 * np.clip((y + 0.8) / 1.1, 0, 1) ** 0.45)

    def bind_grid(self, y: np.ndarray) -> None:
        self._grid_y = None
        self._grid_lateral = self.lateral(y)
        self._grid_y = y

    def dome_y(self, side: int, ax):
        return self.dome[side] + 0.3 * (ax / W - 0.42) ** 2

    def apex_y(self, ax):
        return -0.8 + 1.4 * (ax / W - 0.42) ** 2

    def mediastinum(self, side: int, y):
        knob = 0.075 * np.exp(-((y + 0.4) / 0.07) ** 2) if side == 1 else 0.0
        return 0.1 + knob + 0.02 * (side == -1)

    def lung_distance(self, side: int, x, y, lateral_in: float = 0.0, apex_in: float = 0.0):
        """Approximate signed distance inside one lung (positive inside)."""
        ax = side * x
        return np.minimum.reduce([
            self.lateral(y) - lateral_in - ax,
            ax - self.mediastinum(side, y),
            y - self.apex_y(ax) - apex_in,
            self.dome_y(side, ax) - y,
        ])

    def heart(self, x, y):
        """Signed 'inside' measure of the cardiac silhouette (sheared ellipse, chord widths kept)."""
        xs = x - self.heart_cx - self.shear * (y - self.heart_cy)
        return 1.0 - (xs / self.heart_a) ** 2 - ((y - self.heart_cy) / self.heart_b) ** 2


def _side_sign(side: str) -> int:
    return 1 if side == "left" else -1


def _tree(draw: ImageDraw.ImageDraw, frame: _Frame, rng: np.random.Generator, start, direction, length,
          width, depth, value) -> None:
    """A binary branching vessel/bronchus tree, generated level by level and drawn in pixel space."""
    x = np.array([start[0]], dtype=float)
    y = np.array([start[1]], dtype=float)
    ang = np.array([np.arctan2(direction[1], direction[0])])
    ln = np.array([length], dtype=float)
    segments = []
    for level in range(depth):
        x1, y1 = x + np.cos(ang) * ln, y + np.sin(ang) * ln
        segments.append((x, y, x1, y1, width * 0.72 ** level))
        turns = rng.uniform(0.25, 0.6, size=(2, ang.size)) * np.array([[-1.0], [1.0]])
        x, y = np.concatenate([x1, x1]), np.concatenate([y1, y1])
        ang = np.concatenate([ang + turns[0], ang + turns[1]])
        ln = np.concatenate([ln, ln]) * rng.uniform(0.62, 0.8, size=2 * ln.size)
    scale = frame.px_per_unit()
    for x0, y0, x1, y1, w in segments:
        px0, py0 = frame.to_px(x0, y0)
        px1, py1 = frame.to_px(x1, y1)
        wpx = max(1, int(round(w * scale)))
        for a, b, c, d in zip(px0.tolist(), py0.tolist(), px1.tolist(), py1.tolist()):
            draw.line([(a, b), (c, d)], fill=value, width=wpx)


def render_xray(labels: tuple[str, ...], attrs: dict, size: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """(image uint8 [size, size], {label: bool mask}, geometry in pixels)."""
    labs = set(labels)
    # Separate generators for anatomy, exposure/noise and each finding: the same film rendered with one
    # finding removed differs only where that finding is drawn (what the mask-alignment test relies on).
    seeds = [int(v) for v in rng.integers(0, 2**63, size=3)]
    expo_rng = np.random.default_rng(seeds[1])

    def finding_rng(label: str) -> np.random.Generator:
        return np.random.default_rng([seeds[2], ALL_LABELS.index(label)])

    rng = np.random.default_rng(seeds[0])
    frame = _Frame(size, zoom=rng.uniform(0.92, 1.06), shift=(rng.uniform(-0.04, 0.04), rng.uniform(-0.02, 0.06)),
                   angle=np.deg2rad(rng.uniform(-3, 3)))
    an = _Anatomy(attrs, labs, rng)
    x, y, eps = frame.x, frame.y, frame.eps
    an.bind_grid(y)
    hab = {"slender": 0.06, "average": 0.13, "broad": 0.22}[an.habitus]

    # Soft tissue of the trunk and shoulders: everything that is not aerated lung reads bright.
    body_w = W + hab + 0.14 * _soft(-0.62 - y, 0.08)
    body = _soft(body_w - np.abs(x), eps * 3)
    wall = _soft(W + 0.02 - np.abs(x), 0.04)  # full thickness medially, thinner lateral chest wall
    img = 0.04 + body * (0.5 + 0.12 * wall + 0.2 * hab)

    lungs = {s: _soft(an.lung_distance(s, x, y), eps) for s in (-1, 1)}
    heart_in = an.heart(x, y)
    heart = _soft(heart_in, eps * 3 / an.heart_a)
    lung = np.maximum(lungs[-1], lungs[1]) * (1 - heart)
    img += 0.03 * heart

    # Aerated lung: darker, with vascular markings that fade toward the periphery.
    img -= 0.4 * lung
    vessels = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(vessels)
    for s in (-1, 1):
        hilum = (s * 0.19, an.hilum_y)
        for k in range(5):
            a = np.deg2rad(rng.uniform(-70, 95)) if s == 1 else np.pi - np.deg2rad(rng.uniform(-70, 95))
            _tree(draw, frame, rng, hilum, (np.cos(a), np.sin(a)), rng.uniform(0.13, 0.2), 0.022, 5, 1.0)
    blur = 0.9 * size / 512 + 0.4
    if "pulmonary_edema" in labs:
        blur *= 2.2  # vessels lose their edges in interstitial oedema
    markings = gaussian_filter(np.asarray(vessels, dtype=np.float32), blur)
    hx = np.hypot(np.abs(x) - 0.19, (y - an.hilum_y) * 1.3)
    markings = markings * np.exp(-hx / 0.55)
    hila = np.exp(-((np.abs(x) - 0.2) ** 2 + ((y - an.hilum_y) / 1.6) ** 2) / 0.004)
    masks: dict[str, np.ndarray] = {}

    if "pneumothorax" in labs:
        s = _side_sign(attrs["pneumothorax_side"])
        r = _SIZE_PTX[attrs["pneumothorax_size"]]
        taper = np.clip((0.3 - y) / 0.45, 0, 1)
        inner = np.minimum(an.lateral(y) - r * taper - s * x, y - an.apex_y(s * x) - r * taper)
        outer = an.lung_distance(s, x, y)
        rim = _soft(outer, eps) * _soft(-inner, eps) * (taper > 0.02)
        markings *= 1 - rim
        # Contrast chosen so that a small rim survives the 128 px training films (at 0.09 / 0.2 the
        # tiny model never learnt it: AUROC 0.49) while staying far below the lung/soft-tissue contrast.
        img -= 0.14 * rim
        line = np.exp(-0.5 * (inner / max(eps * 0.9, 0.006)) ** 2) * _soft(outer, eps) * (taper > 0.05)
        img += 0.28 * line
        masks["pneumothorax"] = (rim > 0.5)
    img += 0.14 * markings * lung + 0.1 * hila * lung

    # Bones: posterior ribs (one phase field for all of them), anterior ribs, clavicles, spine, humeri.
    t = np.clip(np.abs(x) / W, 0, 1.15)
    phase = (y + 0.84 - (-0.25 * t + 0.45 * t * t)) / 0.148
    rib = np.clip((np.cos(2 * np.pi * phase) - 0.45) / 0.55, 0, 1) ** 0.7
    rib *= (phase > -0.3) * (phase < 9.3) * _soft(np.abs(x) - 0.06, eps) * _soft(W + 0.04 - np.abs(x), eps * 2)
    aphase = (y + 0.6 - 0.2 * (1 - t)) / 0.2
    arib = np.clip((np.cos(2 * np.pi * aphase) - 0.7) / 0.3, 0, 1) * (aphase > 0) * (aphase < 4.5) * lung
    clav_y = -0.74 - 0.1 * np.clip((np.abs(x) - 0.08) / 0.6, 0, 1) ** 1.5
    clav = _soft(0.022 - np.abs(y - clav_y), eps) * _soft(np.abs(x) - 0.06, eps) * _soft(0.78 - np.abs(x), eps)
    vert = 0.7 + 0.3 * np.clip(np.cos(2 * np.pi * (y + 1) / 0.135) * 3, -1, 1)
    spine = _soft(0.065 - np.abs(x), eps) * vert * (1 - lung)
    img += (0.03 + 0.06 * lung) * rib + 0.035 * arib + 0.1 * clav + 0.035 * spine
    trachea = _soft(0.03 - np.abs(x + 0.005), eps) * _soft(-0.3 - y, 0.02)
    img -= 0.09 * trachea
    if attrs["sex"] == "F":
        for s in (-1, 1):
            img += 0.05 * _soft(0.3 - np.hypot(x - s * 0.5, (y - 0.42) * 1.2), 0.04) * (y > 0.15) * body
    img -= 0.13 * _soft(0.09 - np.hypot((x - 0.33) * 0.8, y - an.dome[1] - 0.13), eps)  # gastric bubble

    fluid = 0.6 + 0.25 * hab  # soft-tissue density that fluid and airless lung take on

    if "pulmonary_edema" in labs:
        sev = _EDEMA[attrs["edema_severity"]]
        haze = np.exp(-np.hypot(np.abs(x) - 0.17, (y - an.hilum_y) * 0.85) / 0.3) * lung
        img += sev * haze
        kerley = Image.new("F", (size, size), 0.0)
        kd = ImageDraw.Draw(kerley)
        rng = finding_rng("pulmonary_edema")
        for s in (-1, 1):
            for _ in range(int(rng.integers(4, 8))):
                yy = rng.uniform(0.12, 0.42)
                xx = s * (an.lateral(yy) - rng.uniform(0.0, 0.02))
                (p0, p1), (q0, q1) = frame.to_px(np.array([xx, xx - s * 0.07]), np.array([yy, yy]))
                kd.line([(float(p0), float(q0)), (float(p1), float(q1))], fill=1.0,
                        width=max(1, int(round(0.008 * frame.px_per_unit()))))
        img += 0.12 * np.asarray(kerley, dtype=np.float32) * lung
        masks["pulmonary_edema"] = (haze > 0.32) & (lung > 0.5)

    if "consolidation" in labs:
        region, box = _lobe_region(an, attrs["lobe"], x, y, eps)
        rng = finding_rng("consolidation")
        blobs = np.zeros_like(x)
        for _ in range(int(rng.integers(3, 6))):
            cx, cy = rng.uniform(*box[0]), rng.uniform(*box[1])
            blobs += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(0.08, 0.13) ** 2))
        dense = np.clip(blobs * 1.4, 0, 1) * region * np.maximum(lungs[-1], lungs[1])
        bronch = Image.new("F", (size, size), 0.0)
        bd = ImageDraw.Draw(bronch)
        s = 1 if attrs["lobe"].startswith("left") else -1
        _tree(bd, frame, rng, (s * 0.19, an.hilum_y), (s * 0.8, 0.6 if "lower" in attrs["lobe"] else -0.2), 0.12,
              0.016, 4, 1.0)
        air = gaussian_filter(np.asarray(bronch, dtype=np.float32), 0.5 + 0.5 * size / 512)
        img = img * (1 - 0.85 * dense) + 0.85 * dense * (fluid - 0.12 * air)
        masks["consolidation"] = dense > 0.4

    if "atelectasis" in labs:
        s = _side_sign(attrs["atelectasis_side"])
        rng = finding_rng("atelectasis")
        cx, cy = s * rng.uniform(0.32, 0.45), an.dome[s] - rng.uniform(0.14, 0.22)
        ang = np.deg2rad(rng.uniform(-18, 18)) * s
        u = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
        v = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
        half_len, half_th = rng.uniform(0.16, 0.24), rng.uniform(0.03, 0.045)
        band = _soft(half_th - np.abs(v), eps) * _soft(half_len - np.abs(u), eps * 4) * lungs[s]
        img = img * (1 - 0.8 * band) + 0.8 * band * fluid
        masks["atelectasis"] = band > 0.5

    for side in ("left", "right"):
        lab = f"pleural_effusion_{side}"
        if lab not in labs:
            continue
        s = _side_sign(side)
        h = _SIZE_EFFUSION[attrs[f"effusion_{side}"]]
        ax = s * x
        surf = an.dome[s] + 0.1 - h * (0.7 + 0.55 * (ax / W) ** 2)  # meniscus: climbs the lateral wall
        field = (_soft(y - surf, 0.015) * _soft(an.lateral(y) - ax, eps) * _soft(ax - 0.05, eps)
                 * _soft(an.dome[s] + 0.2 - y, 0.03))
        img = img * (1 - 0.9 * field) + 0.9 * field * np.maximum(img, fluid)
        masks[lab] = (field > 0.5) & (y < an.dome_y(s, ax)) & (ax > an.mediastinum(s, y))

    if "cardiomegaly" in labs:
        ax_dome = np.where(x < 0, an.dome_y(-1, -x), an.dome_y(1, x))
        masks["cardiomegaly"] = (heart_in > 0) & (y < ax_dome)

    # Exposure, detector blur and noise.
    rng = expo_rng
    contrast = rng.uniform(0.75, 1.3)
    level = rng.uniform(-0.12, 0.12)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip((img - 0.4) * contrast + 0.4 + level, 0, 1) ** gamma
    img = gaussian_filter(img, 0.45 * size / 256 + 0.2)
    img = img + rng.normal(0, rng.uniform(0.008, 0.03), img.shape) * np.sqrt(img + 0.05)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

    row_px, _ = frame.to_px(np.array([-W, W]), np.array([an.heart_cy, an.heart_cy]))
    geometry = {"thorax_left_px": float(row_px[0]), "thorax_right_px": float(row_px[1]),
                "px_per_unit": frame.px_per_unit()}
    return out, {k: np.ascontiguousarray(v, dtype=bool) for k, v in masks.items()}, geometry


def _lobe_region(an: _Anatomy, lobe: str, x, y, eps):
    """Soft region of one lobe as projected on a PA film, and a (x, y) box for seeding opacity."""
    fissure = an.hilum_y + 0.03
    if lobe == "right upper lobe":
        return _soft(fissure - y, eps), ((-0.55, -0.2), (-0.6, fissure - 0.05))
    if lobe == "right middle lobe":
        return _soft(y - fissure, eps) * _soft(0.42 + x, 0.03), ((-0.38, -0.18), (fissure + 0.08, an.dome[-1] - 0.05))
    if lobe == "right lower lobe":
        return _soft(y - fissure - 0.1, eps) * _soft(-0.3 - x, 0.03), ((-0.6, -0.35), (fissure + 0.2, an.dome[-1]))
    if lobe == "left upper lobe":
        return _soft(0.02 - y, 0.03), ((0.25, 0.55), (-0.6, -0.05))
    return _soft(y - 0.08, 0.03) * _soft(x - 0.3, 0.03), ((0.38, 0.6), (0.15, an.dome[1]))
