"""A drift report as plain text or as one self-contained HTML page.

The HTML page has no scripts, stylesheets or images from elsewhere: styles are
inline and each column's plot is an inline SVG of the reference and current
distributions (shares per bin or per category), so it opens on an offline box
and can be attached to a ticket as it is.
"""

from __future__ import annotations

from html import escape
from typing import Any

from appliance.drift.check import ColumnDrift, DriftReport


def _fmt(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.4f}"
    return f"{x:.3g}"


def _decider(col: ColumnDrift) -> str:
    parts = []
    if col.pvalue == col.pvalue:
        p = f"p={_fmt(col.pvalue)}"
        if col.pvalue_adjusted == col.pvalue_adjusted:
            p += f" (Holm {_fmt(col.pvalue_adjusted)})"
        parts.append(f"{col.test} {p}")
    if col.effect:
        parts.append(f"{col.effect}={_fmt(col.effect_value)} (>= {_fmt(col.effect_threshold)})")
    return "; ".join(parts) or col.test


def render_text(report: DriftReport) -> str:
    lines = [
        f"mode: {report.mode}; reference: {report.reference_source}"
        + (f"; current: {report.current}" if report.current else ""),
        f"dataset drift: {'YES' if report.dataset_drift else 'no'} "
        f"({report.drifted_count} of {report.feature_count} features drifted, share "
        f"{report.share:.2f}, threshold {report.share_threshold:.2f})",
    ]
    if report.prediction is not None:
        lines.append(f"prediction drift ({report.prediction.name}): "
                     f"{'YES' if report.prediction.drifted else 'no'}")
    width = max([len(c.name) for c in report.columns] + [6])
    for col in report.columns:
        mark = "DRIFT" if col.drifted else "ok   "
        role = " [prediction]" if col.role == "prediction" else ""
        lines.append(f"{mark} {col.name:<{width}} {col.kind:<11} {_decider(col)}{role}")
        if col.unseen:
            shown = ", ".join(list(col.unseen)[:5])
            lines.append(f"      {'':<{width}} unseen categories: {shown}")
    return "\n".join(lines)


_W, _H, _PAD = 360, 120, 4


def _svg(plot: dict[str, Any], kind: str) -> str:
    ref, cur = plot.get("reference", []), plot.get("current", [])
    if not ref:
        return "<p>no values</p>"
    top = max(max(ref), max(cur), 1e-12)
    k = len(ref)
    slot = (_W - 2 * _PAD) / k
    bars = []
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        x = _PAD + i * slot
        for j, (share, colour) in enumerate(((r, "#4878a8"), (c, "#e07b39"))):
            h = (_H - 2 * _PAD) * share / top
            bars.append(
                f'<rect x="{x + j * slot / 2:.2f}" y="{_H - _PAD - h:.2f}" '
                f'width="{max(slot / 2 - 0.5, 0.5):.2f}" height="{h:.2f}" fill="{colour}"/>'
            )
    if kind == "numeric":
        edges = plot["edges"]
        caption = f"{_fmt(edges[0])} … {_fmt(edges[-1])}"
    else:
        caption = ", ".join(escape(str(label)) for label in plot.get("labels", [])[:8])
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H + 16}" '
        f'role="img"><rect width="{_W}" height="{_H}" fill="#fafafa"/>{"".join(bars)}'
        f'<text x="{_PAD}" y="{_H + 12}" font-size="10">{caption}</text></svg>'
    )


def render_html(report: DriftReport, title: str = "Drift report") -> str:
    rows = []
    for col in report.columns:
        verdict = "DRIFT" if col.drifted else "ok"
        colour = "#b00020" if col.drifted else "#1b5e20"
        stats = ", ".join(f"{escape(k)}={_fmt(v)}" for k, v in col.stats.items())
        rows.append(
            f"<tr><td><b>{escape(col.name)}</b><br>{col.kind}"
            f"{' (prediction)' if col.role == 'prediction' else ''}</td>"
            f'<td style="color:{colour}"><b>{verdict}</b><br>{escape(_decider(col))}</td>'
            f"<td>{_svg(col.plot, col.kind)}</td>"
            f'<td style="font-size:11px">{stats}</td></tr>'
        )
    head = (
        f"<p>Mode <b>{report.mode}</b>, reference from <b>{report.reference_source}</b>"
        + (f", current: {escape(report.current)}" if report.current else "") + ". "
        f"Dataset drift: <b>{'YES' if report.dataset_drift else 'no'}</b> "
        f"({report.drifted_count} of {report.feature_count} features, share "
        f"{report.share:.2f}, threshold {report.share_threshold:.2f}).</p>"
        '<p><span style="color:#4878a8">■ reference</span> '
        '<span style="color:#e07b39">■ current</span> (share of values per bin)</p>'
    )
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title></head>"
        '<body style="font-family:sans-serif;margin:16px">'
        f"<h1>{escape(title)}</h1>{head}"
        '<table style="border-collapse:collapse" border="1" cellpadding="4">'
        "<tr><th>column</th><th>verdict</th><th>distribution</th><th>statistics</th></tr>"
        f"{''.join(rows)}</table></body></html>\n"
    )
