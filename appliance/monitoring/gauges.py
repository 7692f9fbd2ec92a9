"""The state of the box as Prometheus gauges, for the console's ``/metrics``: jobs by
state and kind, live alerts by kind and severity, served models, the audit log's length
and the age of its last signed checkpoint."""

from __future__ import annotations

import time
from datetime import datetime

from appliance.storage.db import Database


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def render(db: Database) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str,
               rows: list[tuple[tuple[tuple[str, str], ...], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{_labels(labels)} {value:g}" for labels, value in rows)

    family("appliance_jobs", "gauge", "Jobs in the queue, by state and kind.", [
        ((("state", state), ("kind", kind)), n) for state, kind, n in db.execute(
            "SELECT state, kind, COUNT(*) FROM jobs GROUP BY state, kind ORDER BY state, kind")])
    family("appliance_alerts", "gauge", "Open and acknowledged alerts, by kind and severity.", [
        ((("state", state), ("kind", kind), ("severity", sev)), n)
        for state, kind, sev, n in db.execute(
            "SELECT state, kind, severity, COUNT(*) FROM alerts WHERE state != 'resolved'"
            " GROUP BY state, kind, severity ORDER BY state, kind, severity")])
    served = db.execute("SELECT COUNT(*) FROM aliases WHERE alias = 'production'").fetchone()[0]
    family("appliance_models_served", "gauge", "Models with a production version.",
           [((), served)])
    entries = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    family("appliance_audit_entries", "gauge", "Entries of the audit log.", [((), entries)])
    last = db.execute("SELECT MAX(created_at) FROM audit_checkpoints").fetchone()[0]
    rows: list[tuple[tuple[tuple[str, str], ...], float]] = []
    if last:
        signed = datetime.fromisoformat(str(last).replace("Z", "+00:00")).timestamp()
        rows.append(((), max(0.0, time.time() - signed)))
    family("appliance_audit_checkpoint_age_seconds", "gauge",
           "Seconds since the audit log's last signed checkpoint (absent before the first).",
           rows)
    return "\n".join(out) + "\n"
