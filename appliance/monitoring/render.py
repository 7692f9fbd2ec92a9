"""A monitoring check as text or as one self-contained HTML page (the drift report's plots,
plus traffic, quality, performance and the label-free estimate)."""

from __future__ import annotations

from html import escape
from typing import Any

from appliance.drift.render import render_html as drift_html
from appliance.drift.render import render_text as drift_text
from appliance.monitoring.check import ModelCheck


def _num(x: Any) -> str:
    return "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))


def _lines(check: ModelCheck) -> list[str]:
    w = check.window.as_dict()
    lines = [f"model {check.model}@{check.version}; window {w['start']} .. {w['end']} "
             f"({w['minutes']} min)",
             "rows: " + check.selection.get("how", f"{check.sampled_rows} kept rows")]
    for t in check.traffic:
        lines.append(f"traffic v{t['version']} {t['route']}: {t['requests']} requests, "
                     f"{t['failures']} failed, {t['client_errors']} rejected; latency ms "
                     f"p50 {_num(t['p50_ms'])} p95 {_num(t['p95_ms'])} p99 {_num(t['p99_ms'])}")
    if check.quality is not None:
        q = check.quality
        lines.append(f"quality: {len(q.breaches)} breach(es)"
                     + (": " + "; ".join(q.breaches[:5]) if q.breaches else ""))
    if check.performance is not None:
        p = check.performance
        m = p["metrics"]
        shown = ", ".join(f"{k} {_num(v)}" for k, v in m.items() if k != "count")
        lines.append(f"performance on {p['labelled_rows']} labelled rows: {shown}")
        if "decay" in p:
            d = p["decay"]
            lines.append(f"  {d['metric']}: window {_num(d['window'])} vs test "
                         f"{_num(d['test'])} -> {'DECAYED' if d['breach'] else 'ok'}")
        lines.append(f"concept drift: ADWIN {'YES' if p['adwin']['drift'] else 'no'}, "
                     f"Page-Hinkley {'YES' if p['page_hinkley']['drift'] else 'no'}")
    if check.estimate is not None:
        e = check.estimate
        lines.append(f"{e['label']}: expected accuracy {_num(e['accuracy'])} over "
                     f"{int(e['count'])} rows")
    lines.extend(f"note: {n}" for n in check.notes)
    if check.breaches:
        lines.extend(f"BREACH {b.kind}: {b.message}" for b in check.breaches)
    else:
        lines.append("no breaches")
    if check.new_alerts:
        lines.append(f"new alerts: {', '.join(map(str, check.new_alerts))}")
    if check.retrain_jobs:
        lines.append(f"retrain jobs queued: {', '.join(map(str, check.retrain_jobs))}")
    return lines


def render_text(check: ModelCheck) -> str:
    lines = _lines(check)
    if check.drift is not None:
        lines.append(drift_text(check.drift))
    return "\n".join(lines)


def render_html(check: ModelCheck) -> str:
    title = f"Monitoring: {check.model}@{check.version}"
    summary = "".join(f"<li>{escape(line)}</li>" for line in _lines(check))
    block = f"<ul>{summary}</ul>"
    if check.drift is not None:
        page = drift_html(check.drift, title=title)
        return page.replace(f"<h1>{escape(title)}</h1>", f"<h1>{escape(title)}</h1>{block}", 1)
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title></head><body style=\"font-family:sans-serif\">"
            f"<h1>{escape(title)}</h1>{block}</body></html>\n")
