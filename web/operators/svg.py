"""Charts for the operators' pages, drawn server-side as inline SVG.

No chart library and no JavaScript: each function returns one `<svg>` element
(with a `<title>` and `<desc>` for screen readers and a `<title>` per bar, which
browsers show as a tooltip). Every label is escaped here; callers pass plain text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

FONT = "font-family=\"system-ui, sans-serif\" font-size=\"11\""
BAR = "#2f6db5"
BAR_ALT = "#d9822b"
GRID = "#d8dde3"
INK = "#333"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top` (1, 2 or 5 times a power of ten)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1.0) if top >= 1 else step
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, desc: str = "",
              width: int = 640, height: int = 220, label_every: int = 1,
              unit: str = "", highlight_last: bool = False) -> str:
    """Vertical bars with a y axis, grid lines and x labels (every `label_every`-th)."""
    left, right, top, bottom = 40, 10, 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for _, v in bars), default=0)
    ticks = nice_ticks(peak)
    ymax = ticks[-1] or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" style="max-width:{width}px" role="img" class="chart" {FONT}>',
             f"<title>{_e(title)}</title>"]
    if desc:
        parts.append(f"<desc>{_e(desc)}</desc>")
    for t in ticks:
        y = top + plot_h - plot_h * t / ymax
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{INK}">{_e(_fmt(t))}</text>')
    n = max(len(bars), 1)
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.75)
    for i, (label, value) in enumerate(bars):
        x = left + i * slot + (slot - bar_w) / 2
        h = plot_h * value / ymax
        y = top + plot_h - h
        colour = BAR_ALT if highlight_last and i == len(bars) - 1 else BAR
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'fill="{colour}"><title>{_e(label)}: {_e(_fmt(value))}{_e(unit)}'
                     f"</title></rect>")
        if i % label_every == 0 or i == len(bars) - 1:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" '
                         f'text-anchor="middle" fill="{INK}">{_e(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" '
                 f'y2="{top + plot_h}" stroke="{INK}" stroke-width="1"/>')
    parts.append("</svg>")
    return "".join(parts)


def hbar_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 420,
               row: int = 22) -> str:
    """Horizontal bars, one row per label, with the value at the end of each bar."""
    label_w, value_w = 130, 50
    height = max(row * len(bars), row) + 8
    plot_w = width - label_w - value_w
    peak = max((v for _, v in bars), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="100%" style="max-width:{width}px" role="img" class="chart" {FONT}>',
             f"<title>{_e(title)}</title>"]
    if not bars:
        parts.append(f'<text x="4" y="16" fill="{INK}">none</text>')
    for i, (label, value) in enumerate(bars):
        y = 4 + i * row
        w = plot_w * value / peak
        parts.append(f'<text x="{label_w - 6}" y="{y + row * 0.65:.1f}" text-anchor="end" '
                     f'fill="{INK}">{_e(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" '
                     f'height="{row - 8}" fill="{BAR}"><title>{_e(label)}: {_e(_fmt(value))}'
                     f"</title></rect>")
        parts.append(f'<text x="{label_w + max(w, 1) + 4:.1f}" y="{y + row * 0.65:.1f}" '
                     f'fill="{INK}">{_e(_fmt(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float | None, *, title: str, width: int = 220, height: int = 14,
          warn_above: float | None = None) -> str:
    """A thin progress bar (fill rate, budget use); empty when the fraction is unknown."""
    f = 0.0 if fraction is None else min(max(fraction, 0.0), 1.0)
    warn = warn_above is not None and fraction is not None and fraction >= warn_above
    colour = "#c0392b" if warn else BAR
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" class="meter">'
            f"<title>{_e(title)}</title>"
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="{GRID}"/>'
            f'<rect x="0" y="0" width="{width * f:.1f}" height="{height}" fill="{colour}"/>'
            f"</svg>")
