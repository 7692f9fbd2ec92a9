"""Runs: every training run with its parameters, metrics, hashes and reproduce verdicts;
curves per step, artifacts to download, several runs side by side."""

from __future__ import annotations

import mimetypes
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance.console import charts, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput
from appliance.training import get_run, read_artifact, run_artifacts, run_steps
from appliance.training.runs import latest_verdicts, run_reproductions
from appliance.training.search import compare_runs, search_runs

bp = Blueprint("runs", __name__)
READ = "runs.read"
# Shown in the list besides id, status and version, when the runs have them.
LIST_METRICS = ("test.accuracy", "test.f1_macro", "test.rmse", "test.r2")


def _search() -> list[dict[str, Any]]:
    return search_runs(web.get_db(), where=request.args.get("where") or None,
                       sort=request.args.get("sort") or None,
                       sweep=web.int_arg("sweep", 0, low=0, high=2**62) or None,
                       limit=web.int_arg("limit", 100, low=1, high=1000))


def _run_ids() -> list[int]:
    ids = []
    for value in request.args.getlist("run"):
        try:
            ids.append(int(value))
        except ValueError as exc:
            raise BadInput(f"query parameter 'run': {value!r} is not a run number") from exc
    return ids


def run_detail(run_id: int) -> dict[str, Any]:
    db = web.get_db()
    run = get_run(db, run_id)
    return {"run": run.as_dict(), "steps": run_steps(db, run.id),
            "artifacts": run_artifacts(db, run.id), "reproductions": run_reproductions(db, run.id)}


@bp.get("/runs")
@requires(READ)
def index() -> str:
    runs = _search()
    params = sorted({k for r in runs for k in r if k.startswith("params.")})
    metrics = [m for m in LIST_METRICS if any(m in r for r in runs)]
    return render_template("runs.html", runs=runs, params=params, metrics=metrics,
                           verdicts=latest_verdicts(web.get_db()),
                           where=request.args.get("where", ""), sort=request.args.get("sort", ""))


@bp.get("/runs/<int:run_id>")
@requires(READ)
def run_page(run_id: int) -> str:
    detail = run_detail(run_id)
    curves = [charts.line_chart([(name, [(float(s), v) for s, v in points])], title=name,
                                x_labels=(f"step {points[0][0]}", f"step {points[-1][0]}"),
                                y_min=None)
              for name, points in detail["steps"].items()]
    return render_template("run.html", curves=curves, **detail)


@bp.get("/runs/<int:run_id>/artifacts/<path:path>")
@requires(READ)
def artifact(run_id: int, path: str) -> Response:
    data = read_artifact(web.home(), run_id, path)
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = Response(data, mimetype=mimetype)
    name = path.rsplit("/", 1)[-1].replace('"', "")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@bp.get("/runs/compare")
@requires(READ)
def compare_page() -> str:
    ids = _run_ids()
    rows = compare_runs(web.get_db(), ids) if len(ids) >= 2 else []
    return render_template("runs_compare.html", ids=ids, rows=rows)


@bp.get("/api/runs")
@requires(READ)
@api(returns="{runs: [{id, status, params.*, test.*, ...}]}")
def api_runs() -> Response:
    """Runs as flat fields (query: where, sort, sweep, limit), newest first by default."""
    return jsonify({"runs": _search()})


@bp.get("/api/runs/<int:run_id>")
@requires(READ)
@api(returns="{run, steps, artifacts, reproductions}")
def api_run(run_id: int) -> Response:
    """One run: its record, step metrics, artifacts and reproduce verdicts."""
    return jsonify(run_detail(run_id))
