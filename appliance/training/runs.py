"""Run records: started, then succeeded (with its model version) or failed.

A run row is written when training starts, so its id can be shown at once and
a crash leaves a trace; the end state and the model version it produced are
written together in one transaction with their audit entries.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, Conflict, NotFound
from appliance.registry.versions import ModelVersion, insert_version
from appliance.storage.db import Database, immediate


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Run:
    id: int
    status: str
    model_name: str
    recipe: dict[str, Any]
    code_hash: str
    dataset: str | None
    dataset_digest: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    environment: dict[str, Any]
    env_hash: str
    seed: int
    device: str
    started_at: str
    ended_at: str | None
    log_digest: str | None
    onnx_digest: str | None
    weights_digest: str | None
    error: str | None
    actor: str
    model_version: str | None
    sweep_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def start_run(db: Database, *, model_name: str, recipe: dict[str, Any],
              code_hash: str, dataset_version_id: int, dataset_digest: str,
              params: dict[str, Any], environment: dict[str, Any], env_hash: str,
              seed: int, device: str, actor: str, sweep_id: int | None = None) -> int:
    with immediate(db):
        cur = db.execute(
            "INSERT INTO runs (status, model_name, recipe, code_hash, dataset_version_id,"
            " dataset_digest, params, environment, env_hash, seed, device, started_at, actor,"
            " sweep_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [RunStatus.RUNNING.value, model_name, json.dumps(recipe, sort_keys=True), code_hash,
             dataset_version_id, dataset_digest, json.dumps(params, sort_keys=True),
             json.dumps(environment, sort_keys=True), env_hash, seed, device, now_iso(), actor,
             sweep_id])
        run_id = int(cur.lastrowid or 0)
        audit.append(db, actor=actor, action="run.start", target=f"run:{run_id}",
                     details={"model": model_name, "code_hash": code_hash,
                              "dataset": f"sha256:{dataset_digest}"})
    return run_id


def _require_running(db: Database, run_id: int) -> None:
    row = db.execute("SELECT status FROM runs WHERE id = ?", [run_id]).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    if row[0] != RunStatus.RUNNING.value:
        raise Conflict(f"run {run_id} is {row[0]}, not running")


def finish_run(db: Database, run_id: int, *, metrics: dict[str, Any],
               log_digest: str, onnx_digest: str, weights_digest: str,
               signature: dict[str, Any], profile_digest: str | None,
               dataset_version_id: int, device: str, actor: str,
               steps: list[tuple[int, str, float]] | None = None,
               artifacts: dict[str, tuple[str, int]] | None = None) -> ModelVersion:
    """Mark the run succeeded (recording the device it really ran on), store its step
    metrics and artifact list, and register its model version, in one transaction."""
    with immediate(db):
        _require_running(db, run_id)
        _insert_steps(db, run_id, steps or [])
        db.conn.executemany(
            "INSERT INTO run_artifacts (run_id, path, digest, size_bytes) VALUES (?, ?, ?, ?)",
            [(run_id, path, digest, size) for path, (digest, size) in
             sorted((artifacts or {}).items())])
        name = db.execute("SELECT model_name FROM runs WHERE id = ?", [run_id]).fetchone()[0]
        db.execute(
            "UPDATE runs SET status = ?, metrics = ?, log_digest = ?, onnx_digest = ?,"
            " weights_digest = ?, device = ?, ended_at = ? WHERE id = ?",
            [RunStatus.SUCCEEDED.value, json.dumps(metrics, sort_keys=True), log_digest,
             onnx_digest, weights_digest, device, now_iso(), run_id])
        audit.append(db, actor=actor, action="run.record", target=f"run:{run_id}",
                     details={"onnx": f"sha256:{onnx_digest}", "weights": weights_digest,
                              "metrics": metrics,
                              "artifacts": {p: f"sha256:{d}" for p, (d, _n) in
                                            sorted((artifacts or {}).items())}})
        return insert_version(
            db, name=name, onnx_digest=onnx_digest, signature=signature, actor=actor,
            source="run", profile_digest=profile_digest, run_id=run_id,
            dataset_version_id=dataset_version_id, metrics=metrics,
        )


def _insert_steps(db: Database, run_id: int,
                  steps: list[tuple[int, str, float]]) -> None:
    # A name logged twice at one step keeps its last value, as a plot would show it.
    latest = {(name, step): value for step, name, value in steps}
    db.conn.executemany(
        "INSERT INTO run_metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)",
        [(run_id, step, name, value) for (name, step), value in sorted(latest.items())])


def record_steps(db: Database, run_id: int,
                 steps: list[tuple[int, str, float]]) -> None:
    """Keep the step metrics of a run that is about to fail, for the curves up to there."""
    with immediate(db):
        _require_running(db, run_id)
        _insert_steps(db, run_id, steps)


def run_steps(db: Database, run_id: int) -> dict[str, list[tuple[int, float]]]:
    """Each step metric of a run as its curve: name -> [(step, value), ...]."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in db.execute("SELECT name, step, value FROM run_metrics WHERE run_id = ?"
                          " ORDER BY name, step", [run_id]).fetchall():
        curves.setdefault(row[0], []).append((int(row[1]), row[2]))
    return curves


def run_artifacts(db: Database, run_id: int) -> list[dict[str, Any]]:
    return list(db.query("SELECT path, digest, size_bytes FROM run_artifacts WHERE run_id = ?"
                         " ORDER BY path", [run_id]))


def fail_run(db: Database, run_id: int, *, error: str, log_digest: str | None,
             actor: str) -> None:
    with immediate(db):
        _require_running(db, run_id)
        db.execute(
            "UPDATE runs SET status = ?, error = ?, log_digest = ?, ended_at = ? WHERE id = ?",
            [RunStatus.FAILED.value, error, log_digest, now_iso(), run_id])
        audit.append(db, actor=actor, action="run.fail", target=f"run:{run_id}",
                     details={"error": error})


def get_run(db: Database, run_id: int | str) -> Run:
    try:
        key = int(str(run_id).removeprefix("run-"))
    except ValueError as exc:
        raise BadInput(f"invalid run id {run_id!r}: expected a number") from exc
    rows = list(db.query(
        "SELECT r.*, (SELECT d.name || '@' || dv.version FROM dataset_versions dv"
        "  JOIN datasets d ON d.id = dv.dataset_id WHERE dv.id = r.dataset_version_id) AS dataset,"
        " (SELECT m.name || '@' || mv.version FROM model_versions mv JOIN models m"
        "  ON m.id = mv.model_id WHERE mv.run_id = r.id) AS model_version"
        " FROM runs r WHERE r.id = ?", [key]))
    if not rows:
        raise NotFound(f"run {run_id} does not exist; see 'appliance runs list'")
    r = rows[0]
    return Run(
        id=r["id"], status=r["status"], model_name=r["model_name"],
        recipe=json.loads(r["recipe"]), code_hash=r["code_hash"], dataset=r["dataset"],
        dataset_digest=r["dataset_digest"], params=json.loads(r["params"]),
        metrics=json.loads(r["metrics"]), environment=json.loads(r["environment"]),
        env_hash=r["env_hash"], seed=r["seed"], device=r["device"],
        started_at=r["started_at"], ended_at=r["ended_at"], log_digest=r["log_digest"],
        onnx_digest=r["onnx_digest"], weights_digest=r["weights_digest"], error=r["error"],
        actor=r["actor"], model_version=r["model_version"], sweep_id=r["sweep_id"],
    )


def list_runs(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    return list(db.query(
        "SELECT r.id, r.status, r.model_name, r.started_at, r.ended_at, r.actor,"
        " (SELECT m.name || '@' || mv.version FROM model_versions mv JOIN models m"
        "  ON m.id = mv.model_id WHERE mv.run_id = r.id) AS model_version"
        " FROM runs r ORDER BY r.id DESC LIMIT ?", [limit]))


def latest_verdicts(db: Database) -> dict[int, str]:
    """The newest ``runs reproduce`` verdict of every run that has one, by run id."""
    out: dict[int, str] = {}
    for row in db.query("SELECT target, entry FROM audit_log WHERE action = 'run.reproduce'"
                        " ORDER BY seq"):
        entry = row["entry"]
        verdict = json.loads(entry.decode() if isinstance(entry, bytes) else entry).get(
            "details", {}).get("verdict")
        _, _, number = str(row["target"]).partition(":")
        if verdict and number.isdigit():
            out[int(number)] = str(verdict)
    return out


def run_reproductions(db: Database, run_id: int) -> list[dict[str, Any]]:
    """Every ``runs reproduce`` verdict on a run, oldest first, from the audit log."""
    out = []
    for row in db.query("SELECT ts, actor, entry FROM audit_log WHERE action = 'run.reproduce'"
                        " AND target = ? ORDER BY seq", [f"run:{run_id}"]):
        entry = row["entry"]
        details = json.loads(entry.decode() if isinstance(entry, bytes) else entry).get(
            "details", {})
        out.append({"at": row["ts"], "actor": row["actor"], "verdict": details.get("verdict"),
                    "differences": details.get("differences", [])})
    return out
