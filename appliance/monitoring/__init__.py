"""Production monitoring: traffic and latency from the request log, data quality, delayed
labels and performance, drift of a served model, alerts, and retraining policies.

The entry points the CLI, the console and the jobs call:

- ``run_check(home, name, window=, config=, actor=, record=True)``: one monitoring check
  (drift, quality, traffic, performance, concept drift), stored and alerting;
  ``render_text`` / ``render_html``. Starting retraining from its alerts combines this
  with the queue, one layer up: ``appliance.jobs.drift.check_model``.
- ``add_feedback(home, name, path, actor=)`` and ``add_feedback_records(...)``: delayed labels.
- ``overview(home, name, window=)``: the console's JSON (traffic per minute, checks, alerts).
- ``list_alerts``, ``acknowledge`` and ``get_alert`` on appliance.db.
- ``set_policy``, ``get_policy``: retraining policies.
- ``run_retention(mon, config)``: roll the request log up into per-minute aggregates and
  delete or empty what is past its retention; ``traffic`` and ``served_models`` read them.
- ``llm_usage(mdb, model=, since=, db=)``: the language models' requests, tokens, latency,
  device time and cost per model version and per day.

The check, feedback and rendering modules (numpy and the drift statistics), the alerts and
the retraining policies (the audit log and its cryptography) are loaded when one of their
names is first used, so that reading traffic or usage starts fast. (The names that are also
the names of their modules, ``llm_usage``, ``overview``, ``rollup`` and ``traffic``, are
imported at once: a module imported first would take the function's place.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import lazy_exports
from appliance.monitoring.llm_usage import llm_usage
from appliance.monitoring.overview import overview
from appliance.monitoring.rollup import RetentionReport, rollup, run_retention
from appliance.monitoring.traffic import Window, served_models, traffic

if TYPE_CHECKING:
    from appliance.monitoring.alerts import Alert, acknowledge, get_alert, list_alerts
    from appliance.monitoring.check import ModelCheck, check_history, run_check
    from appliance.monitoring.feedback import (
        FeedbackResult,
        add_feedback,
        add_feedback_records,
    )
    from appliance.monitoring.render import render_html, render_text
    from appliance.monitoring.retraining import get_policy, set_policy

#: name -> the module of this package that defines it, imported on first use
_LAZY = {
    "ModelCheck": "check", "check_history": "check", "run_check": "check",
    "FeedbackResult": "feedback", "add_feedback": "feedback", "add_feedback_records": "feedback",
    "render_html": "render", "render_text": "render",
    "Alert": "alerts", "acknowledge": "alerts", "get_alert": "alerts", "list_alerts": "alerts",
    "get_policy": "retraining", "set_policy": "retraining",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())

__all__ = [
    "Alert",
    "RetentionReport",
    "FeedbackResult",
    "ModelCheck",
    "Window",
    "acknowledge",
    "add_feedback",
    "add_feedback_records",
    "check_history",
    "get_alert",
    "get_policy",
    "list_alerts",
    "llm_usage",
    "overview",
    "render_html",
    "render_text",
    "rollup",
    "run_check",
    "run_retention",
    "served_models",
    "set_policy",
    "traffic",
]
