"""A run as one HTML page with nothing outside it: inline CSS, no script, every text
escaped (answers are model output, and model output is untrusted)."""

from __future__ import annotations

from html import escape
from typing import Any

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a6b2e}.fail{color:#b00020;font-weight:600}
pre{margin:0;white-space:pre-wrap;max-width:40em}
"""


def _n(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _mark(passed: bool) -> str:
    return '<span class="pass">pass</span>' if passed else '<span class="fail">fail</span>'


def _guardrail(g: dict[str, Any] | None) -> str:
    """A case's guardrail verdict, for its scores cell."""
    if not g:
        return ""
    stages = [f"{stage} {g[stage]['action']} ({', '.join(g[stage]['triggered'])})"
              for stage in ("input", "output") if g.get(stage) and g[stage]["action"]]
    text = "guardrails: " + ("; ".join(stages) or "nothing triggered")
    if g.get("attack"):
        return f"<br>{_mark(bool(g['passed']))} attack case, {escape(text)}"
    return f"<br>{escape(text)}"


def render_html(run: dict[str, Any]) -> str:
    """The report of a run as returned by ``results.get_run``."""
    s = run["summary"]
    out = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>Evaluation run {run['id']}</title><style>{CSS}</style></head><body>",
           f"<h1>Evaluation run {run['id']}: {escape(run['evalset'])} on "
           f"{escape(run['target'])}</h1>",
           "<table>"]
    facts = [("model version", run["model"]), ("device", run["device"]),
             ("cases", s["cases"]), ("passed every scorer", s["passed"]),
             ("no answer", s["errors"]),
             ("guardrails: attack cases passed",
              f"{s['guardrails']['passed']}/{s['guardrails']['attack_cases']} "
              f"({s['guardrails']['pass_rate']:.1%})" if s.get("guardrails") else "no attack case"),
             ("prompt tokens", s["prompt_tokens"]),
             ("completion tokens", s["completion_tokens"]),
             ("parameters", ", ".join(f"{k}={v}" for k, v in run["params"].items()
                                      if v is not None) or "greedy, defaults"),
             ("duration", f"{run['duration_s']} s"), ("created", run["created_at"]),
             ("by", run["created_by"])]
    out += [f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts]
    out.append("</table><h2>Scorers</h2><table><tr><th>scorer</th><th>cases</th>"
               "<th>mean</th><th>pass rate</th></tr>")
    for name, row in s["scorers"].items():
        out.append(f"<tr><td>{escape(name)}</td><td class=\"n\">{row['cases']}</td>"
                   f"<td class=\"n\">{_n(row['mean'])}</td>"
                   f"<td class=\"n\">{_n(row['pass_rate'])}</td></tr>")
    out.append("</table><h2>Cases</h2><table><tr><th>case</th><th>answer</th>"
               "<th>tokens</th><th>ms</th><th>scores</th></tr>")
    for case in run["cases"]:
        answer = escape(case["answer"]) if not case["error"] else \
            f"<span class=\"fail\">{escape(case['error'])}</span>"
        scores = "<br>".join(f"{escape(x['scorer'])} {_n(x['score'], 2)} {_mark(x['passed'])}"
                             f": {escape(x['reason'])}" for x in case["scores"])
        scores += _guardrail(case.get("guardrail"))
        out.append(f"<tr><td>{escape(case['case'])}<br><small>line {case['line']}</small></td>"
                   f"<td><pre>{answer}</pre></td>"
                   f"<td class=\"n\">{case['prompt_tokens']} + {case['completion_tokens']}</td>"
                   f"<td class=\"n\">{_n(case['latency_ms'], 1)}</td><td>{scores}</td></tr>")
    out.append("</table></body></html>\n")
    return "\n".join(out)


def summary_text(run: dict[str, Any]) -> str:
    """A run's summary for a terminal."""
    s = run["summary"]
    lines = [f"run {run['id']}: {run['evalset']} on {run['target']} ({run['model']}, "
             f"{run['device']}): {s['passed']}/{s['cases']} cases passed every scorer"
             + (f", {s['errors']} without an answer" if s["errors"] else "")]
    g = s.get("guardrails")
    if g:
        lines.append(f"  guardrails: {g['passed']}/{g['attack_cases']} attack cases passed "
                     f"({g['pass_rate']:.1%}; {g['by_guardrails']} caught by the checks)")
    width = max((len(n) for n in s["scorers"]), default=6)
    lines.append(f"  {'scorer':<{width}}  cases   mean  pass rate")
    for name, row in s["scorers"].items():
        lines.append(f"  {name:<{width}}  {row['cases']:>5}  {row['mean']:5.3f}  "
                     f"{row['pass_rate']:9.1%}")
    return "\n".join(lines)


def compare_text(cmp: dict[str, Any]) -> str:
    """A comparison (``results.compare``) for a terminal."""
    a, b = cmp["a"], cmp["b"]
    lines = [f"A: run {a['id']} {a['evalset']} on {a['target']} ({a['model']})",
             f"B: run {b['id']} {b['evalset']} on {b['target']} ({b['model']})"]
    width = max((len(n) for n in cmp["scorers"]), default=6)
    lines.append(f"  {'scorer':<{width}}  mean A  mean B   delta")
    for name, row in cmp["scorers"].items():
        delta = "" if row["delta"] is None else f"{row['delta']:+7.3f}"
        lines.append(f"  {name:<{width}}  {_plain(row['a'])}  {_plain(row['b'])}  {delta}")
    for label, key in (("better in B", "better"), ("worse in B", "worse")):
        lines.append(f"{label}: {len(cmp[key])}")
        for c in cmp[key]:
            lines.append(f"  {c['case']}: {c['a']:.3f} -> {c['b']:.3f} "
                         f"({', '.join(c['scorers'])})")
    lines.append(f"unchanged: {cmp['same']}")
    if cmp["only_a"] or cmp["only_b"]:
        lines.append(f"only in A: {', '.join(cmp['only_a']) or '-'}; only in B: "
                     f"{', '.join(cmp['only_b']) or '-'}")
    return "\n".join(lines)


def _plain(value: float | None) -> str:
    return "     -" if value is None else f"{value:6.3f}"
