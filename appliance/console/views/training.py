"""Training: jobs with their state and live log, cancel, submit a recipe; schedules."""

from __future__ import annotations

from typing import Any

import yaml
from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.console import security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput
from appliance.jobs import KINDS
from appliance.queue import jobs

bp = Blueprint("training", __name__)
READ = "jobs.read"
TRAIN = "train"  # a recipe from the form is a training job
SUBMIT = "jobs.write"  # any kind of job through the API
CANCEL = "jobs.write"
LOG_CHUNK = 64 * 1024

SUBMIT_BODY = {"type": "object", "required": ["kind"],
               "properties": {"kind": {"type": "string"}, "params": {"type": "object"},
                              "priority": {"type": "integer"}}}


def schedules() -> list[dict[str, Any]]:
    return list(web.get_db().query(
        "SELECT id, name, cron, timezone, enabled, last_fired_at, last_job_id, created_by"
        " FROM schedules ORDER BY name"))


def recipe_spec(text: str) -> jobs.JobSpec:
    """A train job for a recipe written as YAML (the same fields as a recipe file)."""
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"field 'recipe': not valid YAML: {exc}") from exc
    if not isinstance(recipe, dict):
        raise BadInput("field 'recipe': expected a mapping of recipe fields")
    return jobs.JobSpec(kind="train", params={"recipe": recipe})


@bp.get("/training")
@requires(READ)
def index() -> str:
    state = request.args.get("state") or None
    return render_template("training.html",
                           jobs=jobs.list_jobs(web.get_db(), state=state, limit=100),
                           schedules=schedules(), depth=jobs.queue_depth(web.get_db()))


@bp.get("/training/jobs/<int:job_id>")
@requires(READ)
def job_page(job_id: int) -> str:
    job = jobs.get_job(web.get_db(), job_id)
    text, offset = jobs.read_log(web.home(), job_id)
    return render_template("job.html", job=job, log=text[-LOG_CHUNK:], offset=offset)


@bp.post("/training/jobs/<int:job_id>/cancel")
@requires(CANCEL)
def cancel_form(job_id: int) -> Response:
    jobs.cancel_job(web.get_db(), job_id, actor=security.actor())
    return redirect(url_for("training.job_page", job_id=job_id), 303)


@bp.post("/training/submit")
@requires(TRAIN)
def submit_form() -> Response:
    spec = recipe_spec(web.form_field("recipe"))
    job_id = jobs.submit(web.get_db(), spec, web.config(), kinds=KINDS, actor=security.actor())
    return redirect(url_for("training.job_page", job_id=job_id), 303)


@bp.get("/api/jobs")
@requires(READ)
@api(returns="{jobs: [...], depth: {states, waiting}}")
def api_jobs() -> Response:
    """Jobs, newest first (query: state, kind, limit), and the queue depth."""
    db = web.get_db()
    found = jobs.list_jobs(db, state=request.args.get("state") or None,
                           kind=request.args.get("kind") or None,
                           limit=web.int_arg("limit", 50, low=1, high=1000))
    return jsonify({"jobs": [j.as_dict() for j in found], "depth": jobs.queue_depth(db)})


@bp.get("/api/jobs/<int:job_id>")
@requires(READ)
@api(returns="the job")
def api_job(job_id: int) -> Response:
    """One job: state, attempts, resources, result or error."""
    return jsonify(jobs.get_job(web.get_db(), job_id).as_dict())


@bp.get("/api/jobs/<int:job_id>/log")
@requires(READ)
@api(returns="{text, offset, state}: the log from ?offset= on, and where to continue")
def api_job_log(job_id: int) -> Response:
    """The job's log from byte ?offset=, for a live tail."""
    job = jobs.get_job(web.get_db(), job_id)
    offset = web.int_arg("offset", 0, low=0, high=2**62)
    text, end = jobs.read_log(web.home(), job_id, offset)
    if len(text) > LOG_CHUNK:
        text = text[:LOG_CHUNK]
        end = offset + len(text.encode("utf-8"))
    return jsonify({"text": text, "offset": end, "state": job.state.value})


@bp.post("/api/jobs")
@requires(SUBMIT)
@api(body=SUBMIT_BODY, returns="{id}: the queued job")
def api_submit() -> Response:
    """Queue a job of a kind (train with params.recipe, retrain, reproduce, ...)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
        raise BadInput("the body must be a JSON object with a 'kind'")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise BadInput("field 'params' must be a JSON object")
    priority = body.get("priority", 0)
    if not isinstance(priority, int):
        raise BadInput("field 'priority' must be an integer")
    spec = jobs.JobSpec(kind=body["kind"], params=params, priority=priority)
    job_id = jobs.submit(web.get_db(), spec, web.config(), kinds=KINDS, actor=security.actor())
    return jsonify({"id": job_id})


@bp.post("/api/jobs/<int:job_id>/cancel")
@requires(CANCEL)
@api(returns="the job after the cancel request")
def api_cancel(job_id: int) -> Response:
    """Cancel a queued job, or ask a running job's worker to stop it."""
    return jsonify(jobs.cancel_job(web.get_db(), job_id, actor=security.actor()).as_dict())


@bp.get("/api/schedules")
@requires(READ)
@api(returns="{schedules: [...]}")
def api_schedules() -> Response:
    """Cron schedules that feed the queue."""
    return jsonify({"schedules": schedules()})
