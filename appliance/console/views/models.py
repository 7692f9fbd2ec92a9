"""Models: the registry's models and versions, with what promotion recorded about them
(gate reports, approvals, the model signature, rollouts) and the model card.

Changing where an alias points is the promotion blueprint's job
(``appliance.console.views.promotion``), through the promotion service only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance import promotion, registry
from appliance.capacity import store as capacity_store
from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput

bp = Blueprint("models", __name__)
READ = "models.read"
CARD_FORMATS = {"html": ("text/html", "html"), "md": ("text/markdown", "md")}


def model_detail(name: str) -> dict[str, Any]:
    db = web.get_db()
    return {
        "model": registry.model_summary(db, name),
        "versions": registry.list_versions(db, name),
        "history": list(reversed(registry.alias_history(db, name)))[:50],
        "rollouts": promotion.rollout_status(db, name)[:20],
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
    signature = promotion.get_signature(db, mv.id)
    profile = capacity_store.latest(db, mv.ref)
    return {"version": mv.as_dict(), "lineage": lineage,
            "history": [h for h in registry.alias_history(db, name) if h["version"] == version
                        or h["previous"] == version],
            "gate_reports": list(reversed(promotion.gate_reports(db, mv.ref))),
            "approvals": promotion.list_approvals(db, mv),
            "model_signature": None if signature is None else {
                "key_id": signature.key_id, "signed_at": signature.signed_at,
                "signed_by": signature.signed_by},
            "capacity_profile": None if profile is None else {
                "id": profile["id"], "kind": profile["kind"], "device": profile["device"],
                "points": len(profile["points"]), "created_at": profile["created_at"],
                "created_by": profile["created_by"]}}


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


@bp.get("/models/<name>/<int:version>/card")
@requires(READ)
def card_page(name: str, version: int) -> Response | str:
    """The model card; ``?format=html`` or ``?format=md`` downloads the self-contained file
    (its inline style is for reading off the console, where the CSP would block it)."""
    card = promotion.model_card(web.home(), f"{name}@{version}")
    fmt = request.args.get("format", "")
    if not fmt:
        return render_template("card.html", card=card)
    if fmt not in CARD_FORMATS:
        raise BadInput("query parameter 'format' must be html or md")
    mimetype, ext = CARD_FORMATS[fmt]
    text = promotion.render_html(card) if fmt == "html" else promotion.render_markdown(card)
    response = Response(text, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="model-card-{name}-{version}.{ext}"')
    return response


@bp.get("/api/models")
@requires(READ)
@api(returns="{models: [{name, versions, latest, aliases, ...}]}")
def api_models() -> Response:
    """Every model with its version count, latest version and aliases."""
    return jsonify({"models": registry.list_models(web.get_db())})


@bp.get("/api/models/<name>")
@requires(READ)
@api(returns="{model, versions, history, rollouts}")
def api_model(name: str) -> Response:
    """One model: its versions (newest first) and its recent alias moves."""
    return jsonify(model_detail(name))


@bp.get("/api/models/<name>/versions/<int:version>")
@requires(READ)
@api(returns="{version, lineage, history, gate_reports, approvals, model_signature, "
             "capacity_profile}")
def api_version(name: str, version: int) -> Response:
    """One version: signature, metrics, aliases, tags and lineage (dataset, run)."""
    return jsonify(version_detail(name, version))


@bp.get("/api/models/<name>/versions/<int:version>/card")
@requires(READ)
@api(returns="the model card as data {ref, metrics, training, gate_reports, approvals, ...}")
def api_card(name: str, version: int) -> Response:
    """The model card of a version, as data."""
    return jsonify(promotion.model_card(web.home(), f"{name}@{version}"))
