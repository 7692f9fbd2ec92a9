"""The ``drift-check`` job kind: a monitoring check of a served model, run by the scheduler.

Add one with, for example::

    appliance schedules add churn-drift --cron '0 * * * *' drift-check \\
        -p model=churn -p window_minutes=60

Each run stores its result (history for the console's charts), raises or
refreshes alerts, and may start a retrain job where the model's retraining
policy says so. Without ``model`` it checks every served model (every model
with a ``production`` alias).
"""

from __future__ import annotations

from typing import Any

from appliance.config import load_config
from appliance.errors import ApplianceError, BadInput
from appliance.monitoring.check import run_check
from appliance.monitoring.traffic import Window
from appliance.queue.context import JobCancelled, JobContext
from appliance.storage.home import Home


def validate_drift_check_params(params: dict[str, Any]) -> None:
    unknown = set(params) - {"model", "window_minutes"}
    if unknown:
        raise BadInput(f"drift-check: unknown parameter '{sorted(unknown)[0]}' "
                       "(takes 'model' and 'window_minutes')")
    if "model" in params and (not isinstance(params["model"], str) or not params["model"]):
        raise BadInput("drift-check: 'model' must be a model name")
    minutes = params.get("window_minutes")
    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float))
                                or minutes <= 0):
        raise BadInput("drift-check: 'window_minutes' must be a number of minutes > 0")


def _served(home: Home) -> list[str]:
    with home.db() as db:
        return [r[0] for r in db.execute(
            "SELECT m.name FROM aliases a JOIN models m ON m.id = a.model_id"
            " WHERE a.alias = 'production' ORDER BY m.name")]


def run_drift_check_job(ctx: JobContext) -> dict[str, Any]:
    validate_drift_check_params(ctx.params)
    config = load_config()
    home = Home.from_config(ctx.home, config)
    minutes = float(ctx.params.get("window_minutes") or config["monitoring.window_minutes"])
    names = [ctx.params["model"]] if "model" in ctx.params else _served(home)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for i, name in enumerate(names):
        if ctx.cancelled:
            raise JobCancelled(f"stopped before checking {name}")
        try:
            check = run_check(home, name, window=Window.last(minutes), config=config,
                              actor=f"job:{ctx.job_id}")
        except ApplianceError as exc:
            if "model" in ctx.params:
                raise
            failures.append(f"{name}: {exc.message}")
            ctx.log(f"{name}: not checked: {exc.message}")
            continue
        kinds = sorted({b.kind for b in check.breaches})
        ctx.log(f"{name}@{check.version}: {check.sampled_rows} sampled rows; breaches: "
                f"{', '.join(kinds) or 'none'}; new alerts {check.new_alerts}; "
                f"retrain jobs {check.retrain_jobs}")
        ctx.progress((i + 1) / len(names), f"checked {name}")
        results.append({"model": name, "version": check.version, "check_id": check.check_id,
                        "breaches": kinds, "new_alerts": check.new_alerts,
                        "resolved_alerts": check.resolved_alerts,
                        "retrain_jobs": check.retrain_jobs})
    return {"checked": results, "failed": failures}
