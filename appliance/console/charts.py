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
from typing import NamedTuple

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


def _legend(names: Sequence[tuple[str, str]], x0: float, right: float) -> tuple[list[str], int]:
    """Legend entries (series class, name) laid out left to right, wrapping before
    ``right``: never overlapping. The class ``marked`` gets a ring (see ``xy_chart``)
    instead of a bar. Returns the SVG parts and the number of lines used."""
    parts: list[str] = []
    x, line = x0, 0
    for cls, name in names:
        w = 14 + CHAR_W * len(name) + 12
        if x > x0 and x + w > right:
            x, line = x0, line + 1
        y = PAD_TOP + line * LEGEND_LINE + 9
        if cls == "marked":
            parts.append(f'<circle class="dot marked" cx="{x + 5:.1f}" cy="{y - 4}" r="4"/>')
        else:
            parts.append(f'<rect class="bar {cls}" x="{x:.1f}" y="{y - 7}" width="10" '
                         'height="4"/>')
        parts.append(f'<text class="legend {cls}" x="{x + 14:.1f}" y="{y}">{escape(name)}</text>')
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
    named = [(f"s{i % 4}", name) for i, (name, _) in enumerate([*series, *right])]
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


# --- x against y: numeric on both axes ----------------------------------------------

XY_WIDTH = 720
XY_HEIGHT = 300
XY_PAD_LEFT = 62
XY_PAD_BOTTOM = 40
PALETTE = 8  # series classes s0..s7 in the stylesheet


class XYPoint(NamedTuple):
    """One point of ``xy_chart``: where it lies, what hovering it says, and whether it is
    drawn as a marked (hollow, red-ringed) point, such as a measurement that never settled."""

    x: float
    y: float
    note: str = ""
    marked: bool = False


def ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) from ``lo`` to just past
    ``hi``: the finest such step that needs at most ``count`` ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    power = 10 ** math.floor(math.log10((hi - lo) / count))
    step = next(m * power for m in (1, 2, 2.5, 5, 10, 20)
                if math.ceil(hi / (m * power) - 1e-9) - math.floor(lo / (m * power)) + 1
                <= count)
    first = math.floor(lo / step) * step
    out = []
    value = first
    while value < hi + step * 0.999:
        out.append(round(value, 12))
        value += step
    return out


def xy_chart(
    series: Sequence[tuple[str, Sequence[XYPoint]]],
    *,
    title: str,
    x_label: str,
    x_unit: str,
    y_label: str,
    y_unit: str,
    marked_label: str = "",
    width: int = XY_WIDTH,
    height: int = XY_HEIGHT,
) -> Markup:
    """Named series of points on numeric x and y axes (both from 0), each series joined in
    the order given (not sorted by x: a throughput against latency curve can turn back).

    Both axes carry round ticks and their label with the unit ("throughput (rows/s)");
    every point is drawn and carries a ``<title>`` (its note, x and y) for hover. Marked points are drawn hollow
    with a red ring, and ``marked_label`` names them in the legend when any is shown.
    """
    points = [p for _, pts in series for p in pts if math.isfinite(p.x) and math.isfinite(p.y)]
    if not points:
        return _empty(title, width, height)
    any_marked = any(p.marked for p in points)
    names = [(f"s{i % PALETTE}", name) for i, (name, _) in enumerate(series)]
    if any_marked and marked_label:
        names.append(("marked", marked_label))
    legend, lines = _legend(names, XY_PAD_LEFT, width - PAD_RIGHT)
    top = PAD_TOP + lines * LEGEND_LINE + 6
    x_ticks = ticks(0.0, max(p.x for p in points) or 1.0)
    y_ticks = ticks(0.0, max(p.y for p in points) or 1.0)
    x1, y1 = x_ticks[-1], y_ticks[-1]
    plot_w = width - XY_PAD_LEFT - PAD_RIGHT - 8
    plot_h = height - top - XY_PAD_BOTTOM
    bottom = top + plot_h

    def sx(x: float) -> float:
        return XY_PAD_LEFT + x / x1 * plot_w

    def sy(y: float) -> float:
        return bottom - y / y1 * plot_h

    body = [
        f'<line class="axis" x1="{XY_PAD_LEFT}" y1="{bottom}" x2="{XY_PAD_LEFT + plot_w}" '
        f'y2="{bottom}"/>',
        f'<line class="axis" x1="{XY_PAD_LEFT}" y1="{top}" x2="{XY_PAD_LEFT}" y2="{bottom}"/>',
    ]
    for value in x_ticks:
        x = sx(value)
        body.append(f'<line class="gridline" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
        body.append(f'<text class="tick" x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">'
                    f"{escape(fmt(value))}</text>")
    for value in y_ticks:
        y = sy(value)
        body.append(f'<line class="gridline" x1="{XY_PAD_LEFT}" y1="{y:.1f}" '
                    f'x2="{XY_PAD_LEFT + plot_w}" y2="{y:.1f}"/>')
        body.append(f'<text class="tick" x="{XY_PAD_LEFT - 5}" y="{y + 3:.1f}" '
                    f'text-anchor="end">{escape(fmt(value))}</text>')
    body.append(f'<text class="axis-label" x="{XY_PAD_LEFT + plot_w / 2:.1f}" '
                f'y="{height - 6}" text-anchor="middle">{escape(x_label)} ({escape(x_unit)})</text>')
    middle = top + plot_h / 2
    body.append(f'<text class="axis-label" x="14" y="{middle:.1f}" text-anchor="middle" '
                f'transform="rotate(-90 14 {middle:.1f})">{escape(y_label)} ({escape(y_unit)})</text>')
    body.extend(legend)
    for i, (name, pts) in enumerate(series):
        cls = f"s{i % PALETTE}"
        clean = [p for p in pts if math.isfinite(p.x) and math.isfinite(p.y)]
        if len(clean) > 1:
            coords = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in clean)
            body.append(f'<polyline class="series {cls}" points="{coords}">'
                        f"<title>{escape(name)}</title></polyline>")
        for p in clean:
            what = f"{name}, {p.note}" if p.note else name
            hover = (f"{what}: {fmt(p.x)} {x_unit}, {y_label} {fmt(p.y)} {y_unit}"
                     + (f" ({marked_label})" if p.marked and marked_label else ""))
            body.append(f'<circle class="dot {cls}{" marked" if p.marked else ""}" '
                        f'cx="{sx(p.x):.1f}" cy="{sy(p.y):.1f}" r="{4 if p.marked else 3}">'
                        f"<title>{escape(hover)}</title></circle>")
    return _frame(title, body, width, height, "chart-xy")
