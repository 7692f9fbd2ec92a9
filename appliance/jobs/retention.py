"""The ``monitoring-retention`` job kind: roll the request log up and prune it.

The scheduler daemon runs the same every ``monitoring.retention_interval_minutes`` by
itself; this kind is for a site that wants it on its own schedule or run once from the
queue (``appliance jobs submit monitoring-retention``).
"""

from __future__ import annotations

from typing import Any

from appliance.errors import BadInput
from appliance.monitoring.rollup import run_retention
from appliance.queue.context import JobContext
from appliance.storage.home import Home


def validate_retention_params(params: dict[str, Any]) -> None:
    if params:
        raise BadInput(f"monitoring-retention: unknown parameter '{sorted(params)[0]}' "
                       "(it takes none; the retention settings are monitoring.*)")


def run_retention_job(ctx: JobContext) -> dict[str, Any]:
    home = Home.from_config(ctx.home, ctx.config)
    with home.monitoring_db() as mon:
        report = run_retention(mon, ctx.config)
    ctx.log(f"rolled up {report.rolled_rows} request rows into {report.minutes_written} "
            f"minute(s); deleted {report.deleted_rows}; emptied inputs of "
            f"{report.emptied_inputs}")
    return report.as_dict()
