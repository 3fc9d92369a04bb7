"""Pictures of explanations as PNG bytes: X-ray overlay, 12-lead ECG sheet, highlighted report, pairs.

matplotlib's object API (Figure + Agg canvas, no pyplot): no global state, so the service can draw
from several threads. Imported lazily by callers; `tribind --help` never pays for matplotlib.

The ECG sheet follows the paper convention clinicians read: 25 mm/s, 10 mm/mV, 1 mm minor and 5 mm
major grid, a 1 mV calibration pulse per row, the 3 x 4 layout (I aVR V1 V4 / II aVL V2 V5 /
III aVF V3 V6, each column a quarter of the record) and a lead II rhythm strip of the whole record.
Relevance is shaded behind each lead's trace per window (lead x time) and behind the rhythm strip
summed over leads.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from encoders.explain.engine import Explanation
from encoders.explain.items import Item
from encoders.preprocess.xray import XRAY_MEAN, XRAY_STD

MM_PER_S = 25.0
MM_PER_MV = 10.0
ROW_PITCH_MM = 30.0
CALIBRATION_MM = 8.0               # left margin holding the 1 mV pulse
LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
HEAT_CMAP = "inferno"
SHADE_COLOUR = (0.95, 0.45, 0.05)  # orange: distinct from the red grid and the black trace
DPI = 150


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure, tight: bool = False) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None, pad_inches=0.1,
                   facecolor="white")
    return buffer.getvalue()


def _unit(values: np.ndarray) -> np.ndarray:
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def _title(explanation: Explanation, title: str | None) -> str:
    if title:
        return title
    target = explanation.target or "target"
    name = explanation.item_name or explanation.modality
    return f"{name} vs {target}: cos {explanation.score:+.3f} ({explanation.method})"


# --- X-ray ---------------------------------------------------------------------------------------

def heatmap_to_image(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A [S, S] map on the model input back onto the original [H, W] film (undo pad and resize)."""
    size = heatmap.shape[0]
    height, width = shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    crop = np.ascontiguousarray(heatmap[top:top + new_h, left:left + new_w], dtype=np.float32)
    return np.asarray(Image.fromarray(crop, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


def _film(item: Item) -> np.ndarray:
    if item.image is not None:
        return item.image
    return np.clip(item.tensors["pixels"][0].numpy() * XRAY_STD + XRAY_MEAN, 0.0, 1.0)


def xray_png(explanation: Explanation, item: Item, title: str | None = None) -> bytes:
    """The film beside the film with the relevance overlaid (transparent where relevance is low)."""
    import matplotlib

    film = _film(item)
    heat = _unit(heatmap_to_image(explanation.heatmap, film.shape) if item.image is not None else explanation.heatmap)
    rgba = matplotlib.colormaps[HEAT_CMAP](heat)
    # Below a quarter of the maximum the overlay fades out: the film stays readable where nothing is claimed.
    rgba[..., 3] = 0.8 * np.clip((heat - 0.25) / 0.75, 0.0, 1.0) ** 0.8
    figure = _figure(8.6, 4.6)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for axes in (left, right):
        axes.imshow(film, cmap="gray", vmin=0.0, vmax=1.0, interpolation="lanczos")
        axes.set_axis_off()
    right.imshow(rgba, interpolation="bilinear")
    if heat.max() > 0:
        right.contour(heat, levels=[0.5], colors="white", linewidths=0.8)
    left.set_title("X-ray", fontsize=9)
    right.set_title("relevance (brighter = more; white line: half of the maximum)", fontsize=9)
    mappable = matplotlib.cm.ScalarMappable(cmap=HEAT_CMAP, norm=matplotlib.colors.Normalize(0, 1))
    figure.colorbar(mappable, ax=right, fraction=0.046, pad=0.02, label="share of max relevance")
    figure.suptitle(_title(explanation, title), fontsize=10)
    return _png(figure, tight=True)


# --- ECG -----------------------------------------------------------------------------------------

def _grid(axes, width_mm: float, height_mm: float) -> None:
    from matplotlib.collections import LineCollection

    for step, colour, lw in ((1.0, "#f6d0d0", 0.3), (5.0, "#e89a9a", 0.7)):
        xs = np.arange(0.0, width_mm + 1e-6, step)
        ys = np.arange(0.0, height_mm + 1e-6, step)
        lines = [((x, 0.0), (x, height_mm)) for x in xs] + [((0.0, y), (width_mm, y)) for y in ys]
        axes.add_collection(LineCollection(lines, colors=colour, linewidths=lw, zorder=0))


def _shade(rects: list, x0: float, x1: float, baseline: float, level: float) -> None:
    if level >= 0.05:
        rects.append((x0, baseline - ROW_PITCH_MM / 2, x1 - x0, ROW_PITCH_MM, level))


def ecg_png(explanation: Explanation, item: Item, title: str | None = None) -> bytes:
    """The 12-lead sheet (3 x 4 + rhythm strip) with the lead x window relevance shaded."""
    from matplotlib.patches import Rectangle

    signals = item.tensors["signals"].numpy()
    present = item.tensors["lead_mask"].numpy()
    n_samples = signals.shape[1]
    duration = explanation.window_s * explanation.relevance.shape[1] if explanation.window_s else None
    fs = n_samples / duration if duration else 1.0
    duration = n_samples / fs
    column_s = duration / 4
    lead_index = {name: i for i, name in enumerate(explanation.lead_names)}
    levels = _unit(explanation.relevance)                # [12, W] scaled by the sheet's maximum
    rhythm_levels = _unit(explanation.heatmap)           # [W]
    window = explanation.window_s
    width_mm = CALIBRATION_MM + duration * MM_PER_S + 2.0
    height_mm = 4 * ROW_PITCH_MM
    figure = _figure(width_mm / 25.4 * 1.0, (height_mm + 14.0) / 25.4)
    axes = figure.add_axes((0.0, 0.0, 1.0, height_mm / (height_mm + 14.0)))
    axes.set_xlim(0.0, width_mm)
    axes.set_ylim(0.0, height_mm)
    axes.set_axis_off()
    _grid(axes, width_mm, height_mm)
    times = np.arange(n_samples) / fs
    rects: list = []
    for row in range(4):
        baseline = height_mm - (row + 0.5) * ROW_PITCH_MM
        # 1 mV calibration pulse, 0.2 s wide, at the start of every row.
        pulse_x = np.array([1.0, 2.0, 2.0, 2.0 + 0.2 * MM_PER_S, 2.0 + 0.2 * MM_PER_S, CALIBRATION_MM - 1.0])
        pulse_y = baseline + np.array([0.0, 0.0, MM_PER_MV, MM_PER_MV, 0.0, 0.0])
        axes.plot(pulse_x, pulse_y, color="black", lw=0.8)
        if row < 3:
            segments = [(name, c * column_s, (c + 1) * column_s) for c, name in enumerate(LAYOUT[row])]
        else:
            segments = [(RHYTHM_LEAD, 0.0, duration)]
        for name, t0, t1 in segments:
            lead = lead_index[name]
            keep = (times >= t0) & (times < t1 + 0.5 / fs)
            x = CALIBRATION_MM + times[keep] * MM_PER_S
            label = name if row < 3 else f"{name} (rhythm; shading: all leads)"
            if not present[lead]:
                label += " (not recorded)"
            else:
                axes.plot(x, baseline + signals[lead, keep] * MM_PER_MV, color="black", lw=0.7, zorder=3)
            axes.text(CALIBRATION_MM + t0 * MM_PER_S + 1.0, baseline + 0.36 * ROW_PITCH_MM, label,
                      fontsize=7, zorder=4)
            if t0 > 0:
                axes.plot([CALIBRATION_MM + t0 * MM_PER_S] * 2, [baseline - 3, baseline + 3], color="black", lw=0.8)
            if window:
                for w in range(int(np.floor(t0 / window)), int(np.ceil(t1 / window))):
                    a, b = max(t0, w * window), min(t1, (w + 1) * window)
                    if b <= a or w >= levels.shape[1]:
                        continue
                    level = rhythm_levels[w] if row == 3 else levels[lead, w]
                    _shade(rects, CALIBRATION_MM + a * MM_PER_S, CALIBRATION_MM + b * MM_PER_S, baseline, level)
    for x0, y0, w, h, level in rects:
        axes.add_patch(Rectangle((x0, y0), w, h, facecolor=SHADE_COLOUR, alpha=0.12 + 0.6 * level,
                                 edgecolor="none", zorder=1))
    figure.text(0.005, 1.0 - 5.0 / (height_mm + 14.0), _title(explanation, title), fontsize=9, va="center")
    figure.text(0.995, 1.0 - 10.0 / (height_mm + 14.0),
                f"25 mm/s  10 mm/mV  window {window:.2f} s  orange = relevance (darker = more)",
                fontsize=7, ha="right", va="center", color="#444")
    return _png(figure)


# --- text ----------------------------------------------------------------------------------------

def text_png(explanation: Explanation, item: Item, title: str | None = None, width_in: float = 7.5) -> bytes:
    """The report as written, each word's background shaded by its relevance."""
    from matplotlib.transforms import Bbox

    figure = _figure(width_in, 6.0)
    renderer = figure.canvas.get_renderer()
    levels = _unit(explanation.relevance)
    text = item.text or ""
    line_h = 14.0 / (6.0 * DPI) * 1.6
    x, y = 0.02, 0.94
    figure.text(0.02, 0.985, _title(explanation, title), fontsize=9, va="top", weight="bold")
    cursor = 0
    space = 0.006
    for (start, end), level in zip(explanation.spans, levels):
        gap = text[cursor:start]
        cursor = end
        if "\n" in gap:
            x, y = 0.02, y - line_h * gap.count("\n")
        elif gap:
            x += space
        bbox = {"boxstyle": "square,pad=0.08", "facecolor": SHADE_COLOUR, "alpha": 0.1 + 0.8 * level,
                "edgecolor": "none"} if level >= 0.08 else None
        word = figure.text(x, y, text[start:end], fontsize=9, va="baseline", bbox=bbox)
        extent: Bbox = word.get_window_extent(renderer).transformed(figure.transFigure.inverted())
        if extent.x1 > 0.98 and x > 0.03:
            x, y = 0.02, y - line_h
            word.set_position((x, y))
            extent = word.get_window_extent(renderer).transformed(figure.transFigure.inverted())
        x = extent.x1
    if explanation.truncated:
        figure.text(0.02, y - line_h, "(text past the model's token limit was not seen and is not shown)",
                    fontsize=7, color="#666", va="baseline")
    return _png(figure, tight=True)


# --- any, and pairs ------------------------------------------------------------------------------

def explanation_png(explanation: Explanation, item: Item, title: str | None = None) -> bytes:
    """PNG bytes for one explanation of `item` (any modality)."""
    draw = {"xray": xray_png, "ecg": ecg_png, "text": text_png}[explanation.modality]
    return draw(explanation, item, title)


def pair_png(pair, item_a: Item, item_b: Item) -> bytes:
    """Both sides of a pairwise explanation, one above the other, under one heading."""
    sides = ((pair.a, item_a, "query", "hit"), (pair.b, item_b, "hit", "query"))
    pictures = [Image.open(io.BytesIO(explanation_png(
        e, it, f"{label}: {it.name or it.modality} (relevance for cos {pair.score:+.3f} with the {other})")))
        for e, it, label, other in sides]
    width = max(p.width for p in pictures)
    sheet = Image.new("RGB", (width, sum(p.height for p in pictures) + 10), "white")
    top = 0
    for picture in pictures:
        sheet.paste(picture.convert("RGB"), (0, top))
        top += picture.height + 10
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()
