"""The ``drift-check`` job kind: a monitoring check of a served model, run by the scheduler.

Add one with, for example::

    appliance schedules add churn-drift --cron '0 * * * *' drift-check \\
        -p model=churn -p window_minutes=60

Each run stores its result (history for the console's charts), raises or
refreshes alerts, and may start a retrain job where the model's retraining
policy says so. Without ``model`` it checks every served model (every model
with a ``production`` alias).

``check_model`` is that check for one model: ``monitoring.run_check`` and then
``trigger_retraining``, which turns open alerts into ``retrain`` jobs where the
model's retraining policy says so. The CLI, the console and the demo call it
too, so a check started by hand retrains exactly as a scheduled one does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance import audit
from appliance.config import Config
from appliance.drift import DriftOptions
from appliance.errors import ApplianceError, BadInput
from appliance.jobs import KINDS
from appliance.monitoring.check import ModelCheck, run_check
from appliance.monitoring.retraining import alert_window_start, get_policy
from appliance.monitoring.traffic import Window
from appliance.queue.context import JobCancelled, JobContext
from appliance.queue.jobs import JobSpec, insert_job
from appliance.queue.kinds import Kinds
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home


def check_model(home: Home, name: str, *, config: Config, window: Window | None = None,
                options: DriftOptions | None = None, actor: str = "monitoring",
                record: bool = True) -> ModelCheck:
    """One monitoring check of ``name``; a recorded check may start retrain jobs, which
    are in ``retrain_jobs``."""
    check = run_check(home, name, window=window, config=config, options=options, actor=actor,
                      record=record)
    if record:
        check.retrain_jobs = [t.job_id for t in trigger_retraining(
            home, config, model=check.model, actor=actor, kinds=KINDS)]
    return check


@dataclass(frozen=True)
class Trigger:
    alert_id: int
    model: str
    kind: str
    job_id: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _recent_retrain(db: Database, model: str, cooldown_minutes: float) -> bool:
    """A retrain job for the model is queued or running, or was submitted within cooldown."""
    since = time.time() - cooldown_minutes * 60.0
    for state, submitted, params in db.execute(
        "SELECT state, submitted_at, params FROM jobs WHERE kind = 'retrain' ORDER BY id DESC"
        " LIMIT 200"):
        if json.loads(params).get("model") != model:
            continue
        if state in ("queued", "running"):
            return True
        at = _parse_iso(submitted)
        if at is not None and at >= since:
            return True
    return False


def _parse_iso(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def trigger_retraining(home: Home, config: Config, *, kinds: Kinds, model: str | None = None,
                       actor: str = "monitoring") -> list[Trigger]:
    """Turn open alerts into retrain jobs where the model's policy says so.

    One job per model at a time: while one is queued or running, or within the
    policy's cooldown, further alerts wait. The alert records the job it
    started, in the same transaction as the job and their audit entries.
    """
    db = home.db()
    started: list[Trigger] = []
    try:
        sql = ("SELECT a.id, a.model, a.kind FROM alerts a JOIN retraining_policies p"
               " ON p.model = a.model WHERE a.state = 'open' AND a.retrain_job_id IS NULL")
        args: list[Any] = []
        if model is not None:
            sql += " AND a.model = ?"
            args.append(model)
        candidates = list(db.execute(sql + " ORDER BY a.id", args))
        for alert_id, name, kind in candidates:
            policy = get_policy(db, name)
            if not policy["enabled"] or kind not in policy["triggers"]:
                continue
            params: dict[str, Any] = {"model": name, "alert_id": alert_id}
            # The window of the check that raised the alert, fixed now: a later check that
            # sees the same breach moves the alert on to its own window, and the job must
            # not train on data that depends on when it happens to start.
            since = alert_window_start(home, alert_id)
            if since is not None:
                params["since"] = since
            spec = JobSpec(kind="retrain", params=params)
            with immediate(db):
                if _recent_retrain(db, name, float(policy["cooldown_minutes"])):
                    continue
                job_id = insert_job(db, spec, config, kinds=kinds, actor=actor)
                db.execute("UPDATE alerts SET retrain_job_id = ? WHERE id = ?", [job_id, alert_id])
                audit.append(db, actor=actor, action="alert.retrain", target=f"alert:{alert_id}",
                             details={"model": name, "kind": kind, "job": job_id})
            started.append(Trigger(alert_id, name, kind, job_id))
    finally:
        db.close()
    return started


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
    config = ctx.config
    home = Home.from_config(ctx.home, config)
    minutes = float(ctx.params.get("window_minutes") or config["monitoring.window_minutes"])
    names = [ctx.params["model"]] if "model" in ctx.params else _served(home)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for i, name in enumerate(names):
        if ctx.cancelled:
            raise JobCancelled(f"stopped before checking {name}")
        try:
            check = check_model(home, name, window=Window.last(minutes), config=config,
                                actor=f"job:{ctx.job_id}")
        except ApplianceError as exc:
            if "model" in ctx.params:
                raise
            failures.append(f"{name}: {exc.message}")
            ctx.log(f"{name}: not checked: {exc.message}")
            continue
        kinds = sorted({b.kind for b in check.breaches})
        ctx.log(f"{name}@{check.version}: {check.selection.get('how', check.sampled_rows)}; "
                "breaches: "
                f"{', '.join(kinds) or 'none'}; new alerts {check.new_alerts}; "
                f"retrain jobs {check.retrain_jobs}")
        ctx.progress((i + 1) / len(names), f"checked {name}")
        results.append({"model": name, "version": check.version, "check_id": check.check_id,
                        "breaches": kinds, "new_alerts": check.new_alerts,
                        "resolved_alerts": check.resolved_alerts,
                        "retrain_jobs": check.retrain_jobs})
    return {"checked": results, "failed": failures}
