"""Word relevance as coloured text: ANSI backgrounds for a terminal, an HTML page on request.

The text is rendered as written (spans index the original string), so line breaks and punctuation
stay where the report had them. Colour strength is relevance / max relevance of the text.
"""

from __future__ import annotations

import html as html_lib

import numpy as np

# xterm-256 backgrounds from pale yellow to red: perceptually ordered and readable with black text.
_ANSI_RAMP = (230, 229, 228, 227, 221, 215, 209, 203, 197)
# Below this share of the maximum a word stays uncoloured: faint tints everywhere read as noise.
MIN_SHOWN = 0.08


def _levels(values: np.ndarray) -> np.ndarray:
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def _pieces(text: str, spans: list[tuple[int, int]], values: np.ndarray):
    """(piece, level or None) covering the whole text in order."""
    levels = _levels(values)
    cursor = 0
    for (start, end), level in zip(spans, levels):
        if start > cursor:
            yield text[cursor:start], None
        yield text[start:end], float(level)
        cursor = end
    if cursor < len(text):
        yield text[cursor:], None


def ansi_highlight(text: str, spans: list[tuple[int, int]], values: np.ndarray) -> str:
    """The text with ANSI 256-colour backgrounds on its relevant words."""
    out = []
    for piece, level in _pieces(text, spans, values):
        if level is None or level < MIN_SHOWN:
            out.append(piece)
            continue
        colour = _ANSI_RAMP[min(len(_ANSI_RAMP) - 1, int(level * len(_ANSI_RAMP)))]
        out.append(f"\x1b[30;48;5;{colour}m{piece}\x1b[0m")
    return "".join(out)


def html_highlight(text: str, spans: list[tuple[int, int]], values: np.ndarray, title: str = "") -> str:
    """A self-contained HTML page; hovering a word shows its relevance."""
    raw = np.asarray(values, dtype=np.float64)
    body = []
    index = 0
    for piece, level in _pieces(text, spans, values):
        escaped = html_lib.escape(piece).replace("\n", "<br>\n")
        if level is None:
            body.append(escaped)
            continue
        alpha = 0.0 if level < MIN_SHOWN else 0.15 + 0.75 * level
        body.append(f'<span style="background: rgba(230, 60, 20, {alpha:.2f})" '
                    f'title="relevance {raw[index]:.3g} ({level:.0%} of max)">{escaped}</span>')
        index += 1
    heading = f"<h3>{html_lib.escape(title)}</h3>\n" if title else ""
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>tribind explanation</title></head>\n"
            "<body style=\"font-family: sans-serif; max-width: 60em; line-height: 1.7\">\n"
            f"{heading}<p>{''.join(body)}</p>\n"
            "<p style=\"color: #666; font-size: small\">Shading: relevance of each word for the score "
            "(darker = more relevant).</p>\n</body></html>\n")
