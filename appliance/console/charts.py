"""Small SVG charts drawn on the server, so every page reads without JavaScript.

Each function returns a ``markupsafe.Markup`` holding one ``<svg>`` element
with a ``<title>`` for screen readers. Every text value is escaped; numbers
are formatted by us. No inline script and no inline ``style`` attribute, so
the console's CSP (``default-src 'self'``) holds; colours come from classes
in ``static/console.css``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
         f'text-anchor="middle">no data</text>'],
        width, height, "chart-line",
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_labels: tuple[str, str] = ("", ""),
    width: int = WIDTH,
    height: int = HEIGHT,
    y_min: float | None = 0.0,
) -> Markup:
    """One or more named series of (x, y) points on shared axes.

    ``x_labels`` are printed under the first and last x, since x is usually
    a time the caller formats better than we can.
    """
    points = [(x, y) for _, pts in series for x, y in pts if math.isfinite(y)]
    if not points:
        return _empty(title, width, height)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0 = min(ys) if y_min is None else min(y_min, min(ys))
    y1 = max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y1 = y0 + 1
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = height - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    body = [
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" '
        f'x2="{PAD_LEFT + plot_w}" y2="{PAD_TOP + plot_h}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" '
        f'y2="{PAD_TOP + plot_h}"/>',
        f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" text-anchor="end">'
        f"{escape(fmt(y1))}</text>",
        f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" text-anchor="end">'
        f"{escape(fmt(y0))}</text>",
        f'<text class="tick" x="{PAD_LEFT}" y="{height - 6}">{escape(x_labels[0])}</text>',
        f'<text class="tick" x="{PAD_LEFT + plot_w}" y="{height - 6}" text-anchor="end">'
        f"{escape(x_labels[1])}</text>",
    ]
    for i, (name, pts) in enumerate(series):
        clean = sorted((x, y) for x, y in pts if math.isfinite(y))
        if not clean:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in clean)
        body.append(f'<polyline class="series s{i % 4}" points="{coords}">'
                    f"<title>{escape(name)}</title></polyline>")
        if len(clean) == 1:
            x, y = clean[0]
            body.append(f'<circle class="series s{i % 4}" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2"/>')
        body.append(
            f'<text class="legend s{i % 4}" x="{PAD_LEFT + 6 + 90 * i}" y="{PAD_TOP + 10}">'
            f"{escape(name)}</text>"
        )
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
