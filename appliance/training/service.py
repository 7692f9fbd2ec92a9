"""Running a recipe end to end, and reproducing a recorded run.

``run_training`` is what the CLI calls in-process and what the job queue's
``train`` job calls in a child process: it needs only the data directory and
the recipe (a path or a mapping). It records the run, trains, exports,
checks parity, stores the ONNX model and the log as blobs, and registers the
model version in the same transaction that marks the run succeeded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from appliance import audit
from appliance.config import Config, parse_config
from appliance.datasets.service import DatasetVersion, get_dataset_version, load_table
from appliance.errors import BadInput, Conflict, NotFound, OperationFailed
from appliance.storage.db import immediate
from appliance.storage.home import Home
from appliance.training import environment
from appliance.training.recipe import Recipe, load_recipe, recorded_recipe, store_code
from appliance.training.runs import (
    fail_run,
    finish_run,
    get_run,
    record_steps,
    run_artifacts,
    start_run,
)

if TYPE_CHECKING:
    from appliance.training.trainer import Outcome, Progress


@dataclass(frozen=True)
class RunResult:
    run_id: int
    model_version: str
    onnx_digest: str
    weights_digest: str
    metrics: dict[str, Any]
    parity_max_abs_diff: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReproduceResult:
    run_id: int
    verdict: str  # "identical", "within tolerance" or "not reproducible"
    differences: list[str]
    weights_equal: bool
    max_metric_diff: float
    tolerance: float
    environment_changes: dict[str, Any] = field(default_factory=dict)

    @property
    def reproducible(self) -> bool:
        return self.verdict != "not reproducible"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quiet(event: dict[str, Any]) -> None:
    del event


def _target(recipe: Recipe, dv: DatasetVersion) -> str | None:
    target = recipe.target or dv.target
    if target is None and recipe.template is not None:
        raise BadInput(f"recipe has no 'target' and dataset {dv.ref} was registered without "
                       "one; add 'target: COLUMN' to the recipe")
    return target


def _environment(recipe: Recipe) -> dict[str, Any]:
    """The appliance's environment, and for a script the interpreter it runs under."""
    env = environment.capture()
    if recipe.script is not None:
        env["script_python"] = environment.describe_python(
            environment.python_path(recipe.python))
    return env


def _train(home: Home, dv: DatasetVersion, recipe: Recipe, config: Config,
           progress: Progress) -> Outcome:
    # numpy and torch: imported here, so listing and showing runs does not pay for them
    from appliance.training.script import run_script
    from appliance.training.trainer import train_template
    from appliance.training.trees import train_trees

    target = _target(recipe, dv)
    table = load_table(home.blobs, dv)
    if recipe.script_bytes is not None:
        return run_script(home.blobs.read_bytes(dv.digest), table, recipe, target, dv.ref,
                          progress, parity_tolerance=config["training.parity_tolerance"])
    if target is None:
        raise BadInput("recipe has no target")
    if recipe.template is not None and recipe.template.startswith("gbt_"):
        return train_trees(table, recipe, target, threads=config["training.threads"],
                           parity_tolerance=config["training.parity_tolerance"],
                           progress=progress)
    return train_template(table, recipe, target, threads=config["training.threads"],
                          parity_tolerance=config["training.parity_tolerance"],
                          progress=progress)


def run_training(
    home: Home,
    recipe: Recipe | str | os.PathLike[str] | Mapping[str, Any],
    actor: str,
    *,
    config: Config | None = None,
    progress: Progress | None = None,
    sweep_id: int | None = None,
) -> RunResult:
    """Train ``recipe`` and register its model version; raise if any step fails.

    ``progress`` receives events: ``{"event": "started", "run_id"}``, one
    ``{"event": "epoch", "epoch", "epochs", "loss", "val_loss"?}`` per epoch,
    ``{"event": "export"}``, ``{"event": "parity", "max_abs_diff"}``.
    """
    config = config or parse_config({})
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    log: list[str] = []
    steps: list[tuple[int, str, float]] = []

    def report(event: dict[str, Any]) -> None:
        if event.get("event") == "output":
            log.append(str(event["line"]))  # the script's own line, as it wrote it
        else:
            log.append(" ".join(f"{k}={v}" for k, v in event.items()))
        if event.get("event") == "epoch":
            steps.extend((int(event["epoch"]), name, float(event[name]))
                         for name in ("loss", "val_loss") if name in event)
        (progress or _quiet)(event)

    with home.db() as db:
        dv = get_dataset_version(db, recipe.dataset)
        recipe = recipe.with_dataset(dv.ref)
        _target(recipe, dv)
        env = _environment(recipe)
        store_code(recipe, home.blobs.put_bytes)
        run_id = start_run(
            db, model_name=recipe.name, recipe=recipe.record(), code_hash=recipe.code_hash(),
            dataset_version_id=dv.id, dataset_digest=dv.digest, params=recipe.params,
            environment=env, env_hash=environment.env_hash(env), seed=recipe.seed,
            device=recipe.device, actor=actor, sweep_id=sweep_id)
        report({"event": "started", "run_id": run_id})
        try:
            outcome = _train(home, dv, recipe, config, report)
        except BaseException as exc:
            log.append(f"failed: {exc}")
            record_steps(db, run_id, steps)
            fail_run(db, run_id, error=str(exc) or type(exc).__name__,
                     log_digest=home.blobs.put_bytes("\n".join(log).encode()), actor=actor)
            raise
        metrics = dict(outcome.metrics)
        if outcome.parity_max_abs_diff is not None:
            metrics["parity_max_abs_diff"] = outcome.parity_max_abs_diff
        onnx_digest = home.blobs.put_bytes(outcome.onnx)
        artifacts = {path: (home.blobs.put_bytes(data), len(data))
                     for path, data in outcome.artifacts.items()}
        version = finish_run(
            db, run_id, metrics=metrics, log_digest=home.blobs.put_bytes("\n".join(log).encode()),
            onnx_digest=onnx_digest, weights_digest=outcome.weights_digest,
            signature=outcome.signature, profile_digest=dv.profile_digest,
            dataset_version_id=dv.id, device=outcome.device, actor=actor,
            steps=steps + outcome.steps, artifacts=artifacts)
    return RunResult(run_id=run_id, model_version=version.ref, onnx_digest=onnx_digest,
                     weights_digest=outcome.weights_digest, metrics=metrics,
                     parity_max_abs_diff=outcome.parity_max_abs_diff)


def run_log(home: Home, run_id: int | str) -> str:
    """The run's log: the appliance's events and a script's own output, line by line."""
    with home.db() as db:
        run = get_run(db, run_id)
    if run.log_digest is None:
        raise Conflict(f"run {run.id} is {run.status} and has no log yet; a running job's "
                       "output is in 'appliance jobs logs JOB --follow'")
    return home.blobs.read_bytes(run.log_digest).decode("utf-8", errors="replace")


def read_artifact(home: Home, run_id: int | str, path: str) -> bytes:
    """One artifact a run's script left under ``artifacts/``, hash-verified."""
    with home.db() as db:
        run = get_run(db, run_id)
        found = {a["path"]: a["digest"] for a in run_artifacts(db, run.id)}
    if path not in found:
        listed = ", ".join(sorted(found)) or "none"
        raise NotFound(f"run {run.id} has no artifact '{path}' (artifacts: {listed})")
    return home.blobs.read_bytes(found[path], verify=True)


def _metric_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> float:
    worst = 0.0
    for key, value in old.items():
        other = new.get(key)
        if isinstance(value, Mapping) and isinstance(other, Mapping):
            worst = max(worst, _metric_diff(value, other))
        elif isinstance(value, (int, float)) and isinstance(other, (int, float)):
            worst = max(worst, abs(float(value) - float(other)))
        elif value != other:
            return float("inf")
    return worst


def reproduce_run(
    home: Home, run_id: int | str, actor: str, *, config: Config | None = None,
    progress: Progress | None = None,
) -> ReproduceResult:
    """Re-run a recorded run's recipe on its recorded data and compare the results.

    Nothing is registered; the verdict is appended to the audit log.
    """
    config = config or parse_config({})
    tolerance = float(config["training.reproduce_tolerance"])
    with home.db() as db:
        run = get_run(db, run_id)
        if run.status != "succeeded" or run.dataset is None:
            raise Conflict(f"run {run.id} is {run.status}; only a succeeded run can be reproduced")
        dv = get_dataset_version(db, run.dataset)
        differences: list[str] = []
        if dv.digest != run.dataset_digest:
            differences.append("data: the dataset version's bytes are not those the run used")
        recipe = recorded_recipe(run.recipe, home.blobs.read_bytes)
        if recipe.code_hash() != run.code_hash:
            differences.append("code: the recipe or script hashes differently")
        env = _environment(recipe)
        changes = {k: {"recorded": run.environment.get(k), "now": env.get(k)}
                   for k in sorted(set(env) | set(run.environment))
                   if env.get(k) != run.environment.get(k)}
        if changes:
            differences.append("environment: " + ", ".join(changes))
        try:
            outcome = _train(home, dv, recipe, config, progress or _quiet)
        except OperationFailed as exc:
            differences.append(f"training failed: {exc}")
            outcome = None
        weights_equal = outcome is not None and outcome.weights_digest == run.weights_digest
        if outcome is None:
            diff = float("inf")
        else:
            new_metrics = dict(outcome.metrics)
            if outcome.parity_max_abs_diff is not None:
                new_metrics["parity_max_abs_diff"] = outcome.parity_max_abs_diff
            recorded = {k: v for k, v in run.metrics.items() if k != "parity_max_abs_diff"}
            diff = _metric_diff(recorded, new_metrics)
        if weights_equal:
            verdict = "identical"
        else:
            if outcome is not None:
                differences.append("weights: the ONNX weights differ from the recorded ones")
            verdict = "within tolerance" if diff <= tolerance else "not reproducible"
        result = ReproduceResult(run_id=run.id, verdict=verdict, differences=differences,
                                 weights_equal=weights_equal, max_metric_diff=diff,
                                 tolerance=tolerance, environment_changes=changes)
        with immediate(db):
            audit.append(db, actor=actor, action="run.reproduce", target=f"run:{run.id}",
                         details={"verdict": verdict, "differences": differences})
    return result

