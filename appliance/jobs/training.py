"""The ``train``, ``retrain`` and ``reproduce`` job kinds.

Each handler runs in the worker's child process, opens the data directory
itself (``ctx.home``) with the worker's configuration (``ctx.config``), and
forwards training's progress events to the job's progress and log.

``retrain`` closes the monitoring loop: it trains the production version's
recorded recipe on the original training data plus recent labelled production
data, then hands the new version to promotion as the model's retraining
policy says (see ``appliance.monitoring.retraining``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.auth import Principal, Role
from appliance.config import Config
from appliance.errors import BadInput
from appliance.monitoring.retraining import (
    alert_window_start,
    build_retrain_dataset,
    get_policy,
)
from appliance.promotion import PromotionRefused, promote
from appliance.queue.context import JobCancelled, JobContext
from appliance.queue.jobs import JobSpec, insert_job
from appliance.queue.kinds import Kinds
from appliance.registry import resolve
from appliance.storage.db import immediate
from appliance.storage.home import Home
from appliance.training.recipe import (
    load_recipe,
    read_recipe_file,
    recorded_recipe,
    sweep_points,
)
from appliance.training.runs import get_run
from appliance.training.service import reproduce_run, run_training

ACTOR_PREFIX = "job:"


def _home(ctx: JobContext) -> Home:
    return Home.from_config(ctx.home, ctx.config)


def _actor(ctx: JobContext) -> str:
    return str(ctx.params.get("actor") or f"{ACTOR_PREFIX}{ctx.job_id}")


def _progress(ctx: JobContext, start: float = 0.0, span: float = 1.0) -> Callable[[dict[str, Any]], None]:
    """Training events as the job's progress (epochs scaled into [start, start+span])."""

    def report(event: dict[str, Any]) -> None:
        if ctx.cancelled:
            raise JobCancelled(f"stopped during {event.get('event')}")
        kind = event.get("event")
        if kind == "epoch":
            done = float(event["epoch"]) / max(float(event["epochs"]), 1.0)
            loss = event.get("loss")
            ctx.progress(start + span * done * 0.9,
                         f"epoch {event['epoch']}/{event['epochs']}"
                         + (f" loss {loss:.4f}" if isinstance(loss, float) else ""))
        elif kind == "started":
            ctx.log(f"run {event.get('run_id')} started")
        elif kind == "export":
            ctx.progress(start + span * 0.92, "exporting to ONNX")
        elif kind == "parity":
            ctx.log(f"parity max abs diff {event.get('max_abs_diff')}")
        elif kind == "output":
            ctx.log(f"| {event.get('line')}")  # the training script's own line, as it comes
        else:
            ctx.log(" ".join(f"{k}={v}" for k, v in event.items()))

    return report


# --- train --------------------------------------------------------------------------


def validate_train_params(params: dict[str, Any]) -> None:
    unknown = set(params) - {"recipe", "actor", "point", "sweep"}
    if unknown:
        raise BadInput(f"train: unknown parameter '{sorted(unknown)[0]}' (takes 'recipe', "
                       "'point', 'sweep')")
    recipe = params.get("recipe")
    point = params.get("point")
    if point is not None and not isinstance(point, Mapping):
        raise BadInput("train: 'point' must map parameter names to values")
    sweep = params.get("sweep")
    if sweep is not None and (isinstance(sweep, bool) or not isinstance(sweep, int)):
        raise BadInput("train: 'sweep' must be a sweep number")
    if isinstance(recipe, Mapping):
        load_recipe(recipe, point=point)
    elif not isinstance(recipe, str) or not recipe:
        raise BadInput("train: 'recipe' must be a recipe mapping or the path of a recipe file")


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    validate_train_params(ctx.params)
    recipe = load_recipe(ctx.params["recipe"], point=ctx.params.get("point"))
    result = run_training(_home(ctx), recipe, _actor(ctx), config=ctx.config,
                          progress=_progress(ctx), sweep_id=ctx.params.get("sweep"))
    ctx.progress(1.0, f"registered {result.model_version}")
    return result.as_dict()


@dataclasses.dataclass(frozen=True)
class Sweep:
    id: int
    points: list[dict[str, Any]]
    jobs: list[int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def submit_sweep(home: Home, path: str | Path, *, actor: str, config: Config,
                 kinds: Kinds) -> Sweep:
    """Queue one ``train`` job per point of a sweep recipe's grid, with the sweep's record,
    in one transaction: every point's recipe is checked first, so a bad one queues none."""
    path = Path(path).absolute()
    data = read_recipe_file(path)
    if not isinstance(data, Mapping) or "sweep" not in data:
        raise BadInput(f"{path}: not a sweep recipe (no 'sweep' field)")
    points = sweep_points(data)
    first = None
    for point in points:
        recipe = load_recipe(path, point=point)
        first = first or recipe
    specs = [JobSpec("train", {"recipe": str(path), "point": point}) for point in points]
    with home.db() as db, immediate(db):
        cur = db.execute(
            "INSERT INTO sweeps (model_name, recipe_path, grid, points, jobs, created_at,"
            " created_by) VALUES (?, ?, ?, ?, '[]', ?, ?)",
            [first.name if first else "", str(path), json.dumps(data["sweep"], sort_keys=True),
             len(points), now_iso(), actor])
        sweep_id = int(cur.lastrowid or 0)
        jobs = [insert_job(db, JobSpec(s.kind, {**s.params, "sweep": sweep_id}), config,
                           kinds=kinds, actor=actor) for s in specs]
        db.execute("UPDATE sweeps SET jobs = ? WHERE id = ?", [json.dumps(jobs), sweep_id])
        audit.append(db, actor=actor, action="sweep.submit", target=f"sweep:{sweep_id}",
                     details={"recipe": str(path), "grid": data["sweep"], "jobs": jobs})
    return Sweep(id=sweep_id, points=points, jobs=jobs)


# --- reproduce ----------------------------------------------------------------------


def validate_reproduce_params(params: dict[str, Any]) -> None:
    unknown = set(params) - {"run_id", "actor"}
    if unknown:
        raise BadInput(f"reproduce: unknown parameter '{sorted(unknown)[0]}' (takes 'run_id')")
    run_id = params.get("run_id")
    if isinstance(run_id, bool) or not isinstance(run_id, int) or run_id < 1:
        raise BadInput("reproduce: 'run_id' must be a run number >= 1")


def run_reproduce_job(ctx: JobContext) -> dict[str, Any]:
    validate_reproduce_params(ctx.params)
    result = reproduce_run(_home(ctx), int(ctx.params["run_id"]), _actor(ctx),
                           config=ctx.config, progress=_progress(ctx))
    ctx.progress(1.0, result.verdict)
    return result.as_dict()


# --- retrain ------------------------------------------------------------------------


def validate_retrain_params(params: dict[str, Any]) -> None:
    unknown = set(params) - {"model", "alert_id", "since", "recent_days", "actor"}
    if unknown:
        raise BadInput(f"retrain: unknown parameter '{sorted(unknown)[0]}' "
                       "(takes 'model', 'alert_id', 'since', 'recent_days')")
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise BadInput("retrain: 'model' must be a model name")
    alert = params.get("alert_id")
    if alert is not None and (isinstance(alert, bool) or not isinstance(alert, int)):
        raise BadInput("retrain: 'alert_id' must be an alert number")
    since = params.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
        raise BadInput("retrain: 'since' must be a Unix time")
    days = params.get("recent_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))
                             or days < 0):
        raise BadInput("retrain: 'recent_days' must be a number of days >= 0")


def retrain(home: Home, name: str, *, actor: str, config: Config,
            recent_days: float | None = None, alert_id: int | None = None,
            alert_since: float | None = None, workdir: Path | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None,
            log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Retrain ``name``'s production version on its data plus labelled production data,
    then promote the candidate as the policy allows; return what happened."""
    with home.db() as db:
        mv = resolve(db, name)
        if mv.run_id is None:
            raise BadInput(f"{mv.ref} was imported, not trained here: there is no recipe to "
                           "retrain it with")
        run = get_run(db, mv.run_id)
        policy = get_policy(db, mv.name)
    days = float(policy["recent_days"] if recent_days is None else recent_days)
    since = None
    if policy["production_since"] == "alert" and alert_since is not None:
        since = alert_since  # fixed when the alert queued the job
    elif policy["production_since"] == "alert" and alert_id is not None:
        since = alert_window_start(home, alert_id)
    data = build_retrain_dataset(home, mv, workdir or home.jobs_dir / "retrain",
                                 actor=actor, recent_days=days, config=config, since=since,
                                 include_original=bool(policy["include_original"]))
    log(f"dataset {data.dataset}: {data.original_rows} rows of {data.original} plus "
        f"{data.production_rows} labelled production rows")
    if data.production_rows < int(policy["min_labelled_rows"]):
        raise BadInput(f"only {data.production_rows} labelled production rows; the policy "
                       f"asks for {policy['min_labelled_rows']} (min_labelled_rows)")
    recipe = recorded_recipe(run.recipe, home.blobs.read_bytes).with_dataset(data.dataset)
    features = mv.signature.get("feature_names")
    if features and recipe.script is None:
        # The same inputs as the version it replaces: a column the new data adds, or one
        # that production never sends, must not change the model's signature.
        recipe = dataclasses.replace(recipe, features=list(features))
    result = run_training(home, recipe, actor, config=config, progress=progress)
    log(f"registered {result.model_version}")
    outcome: dict[str, Any] = {
        "model": mv.name, "from_version": mv.version, "candidate": result.model_version,
        "run_id": result.run_id, "dataset": data.dataset,
        "production_rows": data.production_rows, "metrics": result.metrics,
        "alert_id": alert_id, "approval": policy["approval"],
    }
    if policy["approval"] == "required":
        outcome["promotion"] = {
            "state": "awaiting approval",
            "next": f"appliance models promote {result.model_version} --to "
                    f"{policy['promote_to']} (after review)"}
        return outcome
    principal = Principal(actor, Role.OPERATOR, via="local")
    try:
        promoted = promote(home, result.model_version, principal, to=policy["promote_to"],
                           reason=f"retrained after alert {alert_id}" if alert_id else
                           "retrained by policy", config=config)
    except PromotionRefused as exc:
        outcome["promotion"] = {"state": "refused", "failed": exc.report.failed,
                                "message": exc.message}
        log(exc.message)
        return outcome
    outcome["promotion"] = {"state": "promoted", "to": promoted.target,
                            "rollout_id": promoted.rollout_id}
    log(f"{result.model_version} promoted to {promoted.target}")
    return outcome


def run_retrain_job(ctx: JobContext) -> dict[str, Any]:
    validate_retrain_params(ctx.params)
    days = ctx.params.get("recent_days")
    outcome = retrain(_home(ctx), ctx.params["model"], actor=_actor(ctx), config=ctx.config,
                      recent_days=float(days) if days is not None else None,
                      alert_id=ctx.params.get("alert_id"),
                      alert_since=ctx.params.get("since"), workdir=ctx.workdir,
                      progress=_progress(ctx), log=ctx.log)
    ctx.progress(1.0, f"{outcome['candidate']}: {outcome['promotion']['state']}")
    return outcome
