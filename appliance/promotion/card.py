"""Model cards: what a version is, how it was made and judged, and how it served.

``model_card`` gathers the facts from the records (registry, run, dataset
profile, gate reports, approvals, signature, alias history, reproduction
entries of the audit log, drift results when the monitoring area keeps them);
``render_markdown`` and ``render_html`` write them out. The HTML is one
self-contained file (inline style, no scripts, no external links), so it can
be handed to an auditor as it is.
"""

from __future__ import annotations

import html
import json
from typing import Any

from appliance.promotion.records import gate_reports, list_approvals
from appliance.registry import alias_history, resolve
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.training.runs import get_run

_DRIFT_TABLES = ("drift_results", "drift_reports", "drift_checks")


def _profile_summary(home: Home, digest: str | None) -> dict[str, Any] | None:
    if not digest:
        return None
    profile = json.loads(home.blobs.read_bytes(digest))
    columns = {}
    for name, col in profile.get("columns", {}).items():
        entry = {"type": col.get("type"), "missing_share": col.get("missing_share")}
        for key in ("min", "max", "mean", "std", "unique"):
            if key in col:
                entry[key] = col[key]
        if "categories" in col:
            entry["top"] = list(col["categories"])[:5]
        columns[name] = entry
    return {"row_count": profile.get("row_count"), "columns": columns}


def _reproductions(db: Database, run_id: int) -> list[dict[str, Any]]:
    rows = db.query("SELECT seq, ts, actor, entry FROM audit_log WHERE action = ?"
                    " AND target = ? ORDER BY seq", ["run.reproduce", f"run:{run_id}"])
    out = []
    for r in rows:
        entry = r["entry"]
        details = json.loads(entry.decode() if isinstance(entry, bytes) else entry).get(
            "details", {})
        out.append({"at": r["ts"], "actor": r["actor"], "verdict": details.get("verdict"),
                    "details": details})
    return out


def _drift(home: Home, name: str, version: int) -> list[dict[str, Any]]:
    for opener in (home.monitoring_db, home.db):
        database = opener()
        try:
            for table in _DRIFT_TABLES:
                if not database[table].exists():
                    continue
                cols = {c.name for c in database[table].columns}
                if {"model", "version"} <= cols:
                    return list(database.query(
                        f"SELECT * FROM [{table}] WHERE model = ? AND version = ?"
                        " ORDER BY rowid", [name, version]))
        finally:
            database.close()
    return []


def model_card(home: Home, ref: str) -> dict[str, Any]:
    """Everything the card shows, as data (the console renders it its own way)."""
    from appliance.registry.signing import get_signature

    with home.db() as db:
        mv = resolve(db, ref)
        card: dict[str, Any] = {
            "ref": mv.ref, "name": mv.name, "version": mv.version,
            "description": mv.description, "source": mv.source,
            "created_at": mv.created_at, "created_by": mv.created_by,
            "aliases": mv.aliases, "tags": mv.tags, "onnx_sha256": mv.onnx_digest,
            "signature": mv.signature, "metrics": mv.metrics, "dataset": mv.dataset,
            "profile": _profile_summary(home, mv.profile_digest),
        }
        run = get_run(db, mv.run_id) if mv.run_id is not None else None
        card["training"] = None if run is None else {
            "run": run.id, "status": run.status, "recipe": run.recipe, "params": run.params,
            "seed": run.seed, "device": run.device, "code_sha256": run.code_hash,
            "env_sha256": run.env_hash, "dataset_sha256": run.dataset_digest,
            "weights_sha256": run.weights_digest, "started_at": run.started_at,
            "ended_at": run.ended_at, "actor": run.actor,
            "packages": run.environment.get("packages", {}),
        }
        repro = _reproductions(db, run.id) if run is not None else []
        card["reproducibility"] = {
            "checks": repro,
            "verdict": repro[-1]["verdict"] if repro else "not checked",
        }
        card["gate_reports"] = gate_reports(db, mv.ref)
        card["approvals"] = list_approvals(db, mv)
        sig = get_signature(db, mv.id)
        card["model_signature"] = None if sig is None else {
            "key_id": sig.key_id, "signed_at": sig.signed_at, "signed_by": sig.signed_by}
        card["lineage"] = [h for h in alias_history(db, mv.name)
                           if h["version"] == mv.version or h["previous"] == mv.version]
    card["drift"] = _drift(home, mv.name, mv.version)
    return card


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _sections(card: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, paragraphs, table rows with a header row first) per section."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    out.append(("Summary", [card["description"]] if card["description"] else [], [
        ["field", "value"], ["version", card["ref"]], ["source", card["source"]],
        ["registered", f"{card['created_at']} by {card['created_by']}"],
        ["aliases", ", ".join(card["aliases"]) or "-"],
        ["task", str(card["signature"].get("task", "-"))],
        ["target", str(card["signature"].get("target", "-"))],
        ["ONNX sha256", card["onnx_sha256"]],
        ["model signature", (f"Ed25519 key {card['model_signature']['key_id']}, "
                             f"{card['model_signature']['signed_at']}")
         if card["model_signature"] else "not signed (never promoted through the gates)"],
    ]))
    prof = card["profile"]
    rows = [["column", "type", "missing", "range / top values"]]
    if prof:
        for name, col in prof["columns"].items():
            rng = (f"{_num(col.get('min'))} .. {_num(col.get('max'))}" if "min" in col
                   else ", ".join(col.get("top", [])))
            rows.append([name, str(col["type"]), _num(col.get("missing_share")), rng])
    out.append(("Data", [f"Dataset {card['dataset'] or '-'}"
                         + (f", {prof['row_count']} rows" if prof else "")], rows))
    tr = card["training"]
    out.append(("Training", [] if tr else ["Imported; not trained on this appliance."],
                [["field", "value"]] + ([
                    ["run", str(tr["run"])], ["template / recipe",
                                              json.dumps(tr["recipe"].get("model", {}))],
                    ["parameters", json.dumps(tr["params"], sort_keys=True)],
                    ["seed", str(tr["seed"])], ["device", tr["device"]],
                    ["code sha256", tr["code_sha256"]], ["environment sha256", tr["env_sha256"]],
                    ["data sha256", tr["dataset_sha256"]],
                    ["trained", f"{tr['started_at']} .. {tr['ended_at']} by {tr['actor']}"],
                ] if tr else [])))
    metric_rows = [["split", "metric", "value"]]
    for split, values in card["metrics"].items():
        if isinstance(values, dict):
            metric_rows += [[split, k, _num(v)] for k, v in values.items()]
    out.append(("Metrics per split", [], metric_rows))
    gate_rows = [["report", "gate", "value", "threshold", "result"]]
    for rep in card["gate_reports"]:
        label = f"#{rep['id']} {rep['created_at'][:19]} to {rep['target']}" + (
            " (forced)" if rep["forced"] else "")
        for g in rep["gates"]["gates"]:
            gate_rows.append([label, g["gate"], _num(g["value"]), g["threshold"],
                              "pass" if g["passed"] else "FAIL"])
    out.append(("Gate reports", [] if card["gate_reports"] else ["No promotion attempted."],
                gate_rows))
    out.append(("Approvals", [] if card["approvals"] else ["None."],
                [["approver", "role", "at", "comment"]] + [
                    [a["approver"], a["role"], a["created_at"], a["comment"]]
                    for a in card["approvals"]]))
    out.append(("Lineage", [], [["at", "actor", "alias", "from", "to", "reason"]] + [
        [h["at"], h["actor"], h["alias"], str(h["previous"] or "-"),
         str(h["version"] or "(removed)"), h["reason"]] for h in card["lineage"]]))
    rep = card["reproducibility"]
    out.append(("Reproducibility", [f"Verdict: {rep['verdict']}"],
                [["at", "actor", "verdict"]] + [[c["at"], c["actor"], str(c["verdict"])]
                                                for c in rep["checks"]]))
    drift = card["drift"]
    if drift:
        keys = list(drift[0])
        out.append(("Drift history", [], [keys] + [[_num(r[k]) for k in keys] for r in drift]))
    else:
        out.append(("Drift history", ["No drift results recorded for this version."], []))
    return out


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Model card: {card['ref']}", ""]
    for title, paragraphs, rows in _sections(card):
        lines += [f"## {title}", ""]
        for p in paragraphs:
            lines += [p, ""]
        if len(rows) > 1:
            lines.append("| " + " | ".join(_md_cell(c) for c in rows[0]) + " |")
            lines.append("|" + "---|" * len(rows[0]))
            for r in rows[1:]:
                lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
            lines.append("")
    return "\n".join(lines)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
          "color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
          "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;"
          "font-size:.9rem;word-break:break-all}th{background:#f3f3f3}"
          ".FAIL{color:#b00;font-weight:bold}")


def render_html(card: dict[str, Any]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Model card: {e(card['ref'])}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Model card: {e(card['ref'])}</h1>"]
    for title, paragraphs, rows in _sections(card):
        parts.append(f"<h2>{e(title)}</h2>")
        parts += [f"<p>{e(p)}</p>" for p in paragraphs]
        if len(rows) > 1:
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in rows[0]) + "</tr>")
            for r in rows[1:]:
                parts.append("<tr>" + "".join(
                    f"<td class=\"{e(c)}\">{e(c)}</td>" if c == "FAIL" else f"<td>{e(c)}</td>"
                    for c in r) + "</tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
