"""Small SVG charts drawn on the server, so every page reads without JavaScript.

Each function returns a ``markupsafe.Markup`` holding one ``<svg>`` element
with a ``<title>`` for screen readers. Every text value is escaped; numbers
are formatted by us. No inline script and no inline ``style`` attribute, so
the console's CSP (``default-src 'self'``) holds; colours come from classes
in ``static/console.css``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 560
HEIGHT = 160
PAD_LEFT = 48
PAD_RIGHT = 10
PAD_TOP = 10
PAD_BOTTOM = 22


def fmt(value: float) -> str:
    """A short human label: 1234 -> 1.23k, 0.000123 -> 1.23e-04."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e3:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 1e-2:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _frame(title: str, body: list[str], width: int, height: int, css: str) -> Markup:
    parts = [
        f'<svg class="chart {escape(css)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
        f"<title>{escape(title)}</title>",
        *body,
        "</svg>",
    ]
    return Markup("".join(parts))


def _empty(title: str, width: int, height: int) -> Markup:
    return _frame(
        title,
        [f'<text class="chart-empty" x="{width / 2:.0f}" y="{height / 2:.0f}" '
         f'text-anchor="middle">no data yet: {escape(title)}</text>'],
        width, height, "chart-line",
    )


LEGEND_LINE = 14
CHAR_W = 6.2  # a 10 px label's average advance, enough to keep labels apart


def _legend(names: Sequence[tuple[int, str]], x0: float, right: float) -> tuple[list[str], int]:
    """Legend entries laid out left to right, wrapping before ``right``: never overlapping.
    Returns the SVG parts and the number of lines used."""
    parts: list[str] = []
    x, line = x0, 0
    for i, name in names:
        w = 14 + CHAR_W * len(name) + 12
        if x > x0 and x + w > right:
            x, line = x0, line + 1
        y = PAD_TOP + line * LEGEND_LINE + 9
        parts.append(f'<rect class="bar s{i % 4}" x="{x:.1f}" y="{y - 7}" width="10" height="4"/>')
        parts.append(f'<text class="legend s{i % 4}" x="{x + 14:.1f}" y="{y}">{escape(name)}</text>')
        x += w
    return parts, (line + 1 if names else 0)


def _scale(values: Sequence[float], y_min: float | None) -> tuple[float, float]:
    lo = min(values) if y_min is None else min(y_min, min(values))
    hi = max(values)
    if hi == lo:
        hi = lo + 1
    return lo, hi


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_labels: tuple[str, str] = ("", ""),
    width: int = WIDTH,
    height: int = HEIGHT,
    y_min: float | None = 0.0,
    right: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
    right_label: str = "",
    x_format: Callable[[float], str] | None = None,
) -> Markup:
    """Named series of (x, y) points; ``right`` series have an axis of their own on the
    right (a count beside rates, say), so neither flattens the other.

    ``x_labels`` are printed under the first and last x, since x is usually a time the
    caller formats better than we can; ``x_format`` labels each point's hover title.
    Every point carries a ``<title>``, so hovering shows its value. The SVG scales to the
    width of its card (``viewBox``; the stylesheet sets the width).
    """
    groups = [list(series), list(right)]
    points = [(x, y) for group in groups for _, pts in group for x, y in pts if math.isfinite(y)]
    if not points:
        return _empty(title, width, height)
    xs = [p[0] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad_right = PAD_LEFT if right else PAD_RIGHT
    named = [(i, name) for i, (name, _) in enumerate([*series, *right])]
    legend, lines = _legend(named, PAD_LEFT, width - pad_right)
    top = PAD_TOP + lines * LEGEND_LINE + 2
    plot_w = width - PAD_LEFT - pad_right
    plot_h = height - top - PAD_BOTTOM
    scales = []
    for group in groups:
        ys = [y for _, pts in group for _, y in pts if math.isfinite(y)]
        scales.append(_scale(ys, y_min) if ys else (0.0, 1.0))

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float, side: int) -> float:
        lo, hi = scales[side]
        return top + plot_h - (y - lo) / (hi - lo) * plot_h

    bottom = top + plot_h
    body = [
        f'<line class="axis" x1="{PAD_LEFT}" y1="{bottom}" x2="{PAD_LEFT + plot_w}" y2="{bottom}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{top}" x2="{PAD_LEFT}" y2="{bottom}"/>',
        f'<text class="tick" x="{PAD_LEFT}" y="{height - 6}">{escape(x_labels[0])}</text>',
        f'<text class="tick" x="{PAD_LEFT + plot_w}" y="{height - 6}" text-anchor="end">'
        f"{escape(x_labels[1])}</text>",
    ]
    for side in range(2 if right else 1):
        lo, hi = scales[side]
        x_axis = PAD_LEFT - 4 if side == 0 else PAD_LEFT + plot_w + 4
        anchor = "end" if side == 0 else "start"
        if side == 1:
            body.append(f'<line class="axis" x1="{PAD_LEFT + plot_w}" y1="{top}" '
                        f'x2="{PAD_LEFT + plot_w}" y2="{bottom}"/>')
        for value in (hi, (lo + hi) / 2, lo):
            body.append(f'<text class="tick" x="{x_axis}" y="{sy(value, side) + 3:.1f}" '
                        f'text-anchor="{anchor}">{escape(fmt(value))}</text>')
    if right and right_label:
        # Between the first and last x labels, which stand at the two ends.
        body.append(f'<text class="tick" x="{PAD_LEFT + plot_w / 2:.1f}" y="{height - 6}" '
                    f'text-anchor="middle">right axis: {escape(right_label)}</text>')
    body.extend(legend)
    for i, (name, pts) in enumerate([*series, *right]):
        side = 0 if i < len(series) else 1
        clean = sorted((x, y) for x, y in pts if math.isfinite(y))
        if not clean:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y, side):.1f}" for x, y in clean)
        body.append(f'<polyline class="series s{i % 4}" points="{coords}">'
                    f"<title>{escape(name)}</title></polyline>")
        step = max(1, len(clean) // 120)  # hover targets for at most ~120 points a series
        for x, y in clean[::step]:
            when = f" at {x_format(x)}" if x_format else ""
            body.append(f'<circle class="point s{i % 4}" cx="{sx(x):.1f}" cy="{sy(y, side):.1f}" '
                        f'r="{2 if len(clean) == 1 else 2.5}"><title>{escape(name)}: '
                        f"{escape(fmt(y))}{escape(when)}</title></circle>")
    return _frame(title, body, width, height, "chart-line")


def histogram(
    labels: Sequence[str],
    counts: Sequence[float],
    *,
    title: str,
    compare: Sequence[float] | None = None,
    names: tuple[str, str] = ("reference", "current"),
    width: int = 240,
    height: int = 80,
) -> Markup:
    """Bars of ``counts`` (as shares of their total), and, when ``compare`` is given,
    a second set of bars beside them: a reference against current distribution."""
    if not counts or sum(counts) <= 0:
        return _empty(title, width, height)
    sets = [list(counts)] + ([list(compare)] if compare is not None else [])
    shares = []
    for values in sets:
        total = float(sum(values)) or 1.0
        shares.append([v / total for v in values])
    top = max(max(s) for s in shares) or 1.0
    n = len(counts)
    pad_bottom = 14
    plot_h = height - pad_bottom - 2
    slot = width / n
    bar = slot / len(sets) * 0.9
    body = []
    for k, values in enumerate(shares):
        for i, share in enumerate(values):
            h = share / top * plot_h
            x = i * slot + k * bar
            label = labels[i] if i < len(labels) else str(i)
            body.append(
                f'<rect class="bar b{k}" x="{x:.1f}" y="{2 + plot_h - h:.1f}" '
                f'width="{max(bar - 0.5, 0.5):.1f}" height="{h:.1f}">'
                f"<title>{escape(names[k] if compare is not None else '')} "
                f"{escape(label)}: {share:.1%}</title></rect>"
            )
    body.append(f'<text class="tick" x="0" y="{height - 2}">{escape(labels[0] if labels else "")}</text>')
    if labels:
        body.append(f'<text class="tick" x="{width}" y="{height - 2}" text-anchor="end">'
                    f"{escape(labels[-1])}</text>")
    return _frame(title, body, width, height, "chart-hist")


def rebin(edges: Sequence[float], counts: Sequence[int], bins: int = 20) -> tuple[list[str], list[float]]:
    """Fold a profile's many quantile bins into ``bins`` equal-width bins for display.

    Counts of a source bin are spread over the display bins it overlaps in
    proportion to the overlap, so the picture is the same data, coarser.
    """
    if len(edges) < 2 or not counts:
        return [], []
    lo, hi = float(edges[0]), float(edges[-1])
    if hi <= lo:
        return [fmt(lo)], [float(sum(counts))]
    step = (hi - lo) / bins
    out = [0.0] * bins
    for i, count in enumerate(counts):
        a, b = float(edges[i]), float(edges[i + 1])
        if b <= a:
            out[min(int((a - lo) / step), bins - 1)] += count
            continue
        first = min(int((a - lo) / step), bins - 1)
        last = min(int((b - lo) / step), bins - 1)
        for j in range(first, last + 1):
            left = max(a, lo + j * step)
            right = min(b, lo + (j + 1) * step)
            if right > left:
                out[j] += count * (right - left) / (b - a)
    labels = [fmt(lo + j * step) for j in range(bins)]
    labels[-1] = fmt(hi)
    return labels, out
