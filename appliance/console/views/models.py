"""Models: the registry's models and versions; moving aliases (promote, rollback)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, url_for
from werkzeug.wrappers import Response

from appliance import registry
from appliance.console import identity, security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput, Conflict

bp = Blueprint("models", __name__)
READ = "models.read"
PROMOTE = "models.promote"
ROLLBACK = "models.rollback"
PRODUCTION = registry.DEFAULT_ALIAS

ALIAS_BODY = {"type": "object", "required": ["alias", "version"],
              "properties": {"alias": {"type": "string"}, "version": {"type": "integer"},
                             "reason": {"type": "string"}}}
ROLLBACK_BODY = {"type": "object", "properties": {"alias": {"type": "string"},
                                                  "reason": {"type": "string"}}}


def model_detail(name: str) -> dict[str, Any]:
    db = web.get_db()
    return {
        "model": registry.model_summary(db, name),
        "versions": registry.list_versions(db, name),
        "history": list(reversed(registry.alias_history(db, name)))[:50],
    }


def version_detail(name: str, version: int) -> dict[str, Any]:
    db = web.get_db()
    mv = registry.resolve(db, f"{name}@{version}")
    lineage: dict[str, Any] = {"dataset": mv.dataset, "run": None}
    if mv.run_id is not None:
        rows = list(db.query(
            "SELECT id, status, recipe, code_hash, dataset_digest, env_hash, seed, device,"
            " started_at, ended_at, actor FROM runs WHERE id = ?", [mv.run_id]))
        lineage["run"] = rows[0] if rows else None
    return {"version": mv.as_dict(), "lineage": lineage,
            "history": [h for h in registry.alias_history(db, name) if h["version"] == version
                        or h["previous"] == version]}


def rollback_target(name: str, alias: str) -> int:
    """The version ``alias`` pointed at before its current one."""
    history = registry.alias_history(web.get_db(), name, alias)
    if not history or history[-1]["version"] is None:
        raise Conflict(f"model {name} has no '{alias}' alias to roll back")
    previous = history[-1]["previous"]
    if previous is None:
        raise Conflict(f"model {name}'s '{alias}' alias has no earlier version to roll back to")
    return int(previous)


def move(name: str, alias: str, version: int, reason: str) -> registry.AliasMove:
    """Point ``alias`` at ``version``; an alias other than production needs models.write
    (the route's own permission already covered production)."""
    registry.check_alias(alias)
    if alias != PRODUCTION:
        identity.authorize(security.current_principal(), "models.write")
    return registry.set_alias(web.get_db(), name, version, alias, security.actor(), reason=reason)


def _version_field() -> int:
    raw = web.form_field("version")
    try:
        return int(raw)
    except ValueError as exc:
        raise BadInput("field 'version' must be a version number") from exc


@bp.get("/models")
@requires(READ)
def index() -> str:
    return render_template("models.html", models=registry.list_models(web.get_db()))


@bp.get("/models/<name>")
@requires(READ)
def model_page(name: str) -> str:
    return render_template("model.html", **model_detail(name))


@bp.get("/models/<name>/<int:version>")
@requires(READ)
def version_page(name: str, version: int) -> str:
    return render_template("model_version.html", **version_detail(name, version))


@bp.post("/models/<name>/alias")
@requires(PROMOTE)
def alias_form(name: str) -> Response:
    version = _version_field()
    move(name, web.form_field("alias", required=False) or PRODUCTION, version,
         web.form_field("reason", required=False))
    return redirect(url_for("models.version_page", name=name, version=version), 303)


@bp.post("/models/<name>/rollback")
@requires(ROLLBACK)
def rollback_form(name: str) -> Response:
    alias = web.form_field("alias", required=False) or PRODUCTION
    version = rollback_target(name, alias)
    move(name, alias, version, web.form_field("reason", required=False) or "rollback")
    return redirect(url_for("models.model_page", name=name), 303)


@bp.get("/api/models")
@requires(READ)
@api(returns="{models: [{name, versions, latest, aliases, ...}]}")
def api_models() -> Response:
    """Every model with its version count, latest version and aliases."""
    return jsonify({"models": registry.list_models(web.get_db())})


@bp.get("/api/models/<name>")
@requires(READ)
@api(returns="{model, versions, history}")
def api_model(name: str) -> Response:
    """One model: its versions (newest first) and its recent alias moves."""
    return jsonify(model_detail(name))


@bp.get("/api/models/<name>/versions/<int:version>")
@requires(READ)
@api(returns="{version, lineage, history}")
def api_version(name: str, version: int) -> Response:
    """One version: signature, metrics, aliases, tags and lineage (dataset, run)."""
    return jsonify(version_detail(name, version))


@bp.post("/api/models/<name>/aliases")
@requires(PROMOTE)
@api(body=ALIAS_BODY, returns="the alias move {name, alias, version, previous, changed}")
def api_alias(name: str) -> Response:
    """Point an alias (production to promote) at a version."""
    move_ = move(name, web.form_field("alias"), _version_field(),
                 web.form_field("reason", required=False))
    return jsonify(move_.as_dict())


@bp.post("/api/models/<name>/rollback")
@requires(ROLLBACK)
@api(body=ROLLBACK_BODY, returns="the alias move {name, alias, version, previous, changed}")
def api_rollback(name: str) -> Response:
    """Point an alias (production by default) back at the version it held before."""
    alias = web.form_field("alias", required=False) or PRODUCTION
    move_ = move(name, alias, rollback_target(name, alias),
                 web.form_field("reason", required=False) or "rollback")
    return jsonify(move_.as_dict())
