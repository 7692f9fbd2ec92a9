"""Promotion from the console: the gate report before the confirm button, approvals,
rollback and staged (shadow, canary) rollouts, all through ``appliance.promotion``.

The console adds no rule of its own: the gates, the separation of duties, who may
force a promotion and what a rollback puts back are decided by the promotion
service with the caller's own principal, so the pages, the API and the CLI agree.
A promotion form is two steps: a dry run (``evaluate_gates``) shows every gate's
result, and only then the confirm button sends the real promotion, which runs the
gates again inside the service (the report may have changed meanwhile).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance import promotion, registry
from appliance.auth import Principal
from appliance.console import security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput
from appliance.promotion.service import TARGETS

bp = Blueprint("promotion", __name__)
PROMOTE = "models.promote"
APPROVE = "models.approve"
ROLLBACK = "models.rollback"
READ = "models.read"
TRUE = frozenset({"1", "true", "on", "yes"})

PROMOTE_BODY = {"type": "object", "properties": {
    "to": {"type": "string", "enum": list(TARGETS), "default": "production"},
    "reason": {"type": "string"}, "force": {"type": "boolean"},
    "breaking_change": {"type": "boolean"}}}
COMMENT_BODY = {"type": "object", "properties": {"comment": {"type": "string"}}}
REASON_BODY = {"type": "object", "properties": {"reason": {"type": "string"}}}


def principal() -> Principal:
    caller = security.current_principal()
    if caller is None:
        raise RuntimeError("a promotion view ran without a principal")
    return caller.principal


def _target(raw: str) -> str:
    to = raw.strip() or "production"
    if to not in TARGETS:
        raise BadInput(f"field 'to' must be one of {', '.join(TARGETS)}")
    return to


def _flag(name: str) -> bool:
    return web.form_field(name, required=False).lower() in TRUE


def _ref(name: str, version: int) -> str:
    """The version's reference, after checking it exists (404 otherwise)."""
    return registry.resolve(web.get_db(), f"{name}@{version}").ref


def dry_run(name: str, version: int, to: str, breaking_change: bool) -> dict[str, Any]:
    report = promotion.evaluate_gates(web.home(), _ref(name, version), target=to,
                                      breaking_change=breaking_change, config=web.config())
    return report.as_dict()


def do_promote(name: str, version: int) -> promotion.PromotionResult:
    return promotion.promote(
        web.home(), _ref(name, version), principal(), to=_target(web.form_field("to", required=False)),
        force=_flag("force"), reason=web.form_field("reason", required=False),
        breaking_change=_flag("breaking_change"), config=web.config())


def rollouts(name: str) -> list[dict[str, Any]]:
    return promotion.rollout_status(web.get_db(), name)


# --- pages ------------------------------------------------------------------------------


def _promote_page(name: str, version: int, to: str, breaking: bool, report: dict[str, Any],
                  *, refused: str = "", reason: str = "") -> str:
    return render_template("promote.html", name=name, version=version, to=to,
                           breaking_change=breaking, report=report, refused=refused,
                           reason=reason, targets=TARGETS)


@bp.get("/models/<name>/<int:version>/promote")
@requires(PROMOTE)
def promote_page(name: str, version: int) -> str:
    """Step one: the gate report of a dry run, and the confirm form under it."""
    to = _target(request.args.get("to", ""))
    breaking = request.args.get("breaking_change", "").lower() in TRUE
    return _promote_page(name, version, to, breaking, dry_run(name, version, to, breaking))


@bp.post("/models/<name>/<int:version>/promote")
@requires(PROMOTE)
def promote_form(name: str, version: int) -> Response:
    """Step two: promote; a refusal shows the report with its failed gates (409)."""
    try:
        do_promote(name, version)
    except promotion.PromotionRefused as exc:
        body = _promote_page(name, version, exc.report.target,
                             _flag("breaking_change"), exc.report.as_dict(),
                             refused=exc.message,
                             reason=web.form_field("reason", required=False))
        return Response(body, status=409, mimetype="text/html")
    return redirect(url_for("models.version_page", name=name, version=version), 303)


@bp.post("/models/<name>/<int:version>/approve")
@requires(APPROVE)
def approve_form(name: str, version: int) -> Response:
    promotion.approve(web.home(), _ref(name, version), principal(),
                      comment=web.form_field("comment", required=False))
    return redirect(url_for("models.version_page", name=name, version=version), 303)


@bp.post("/models/<name>/rollback")
@requires(ROLLBACK)
def rollback_form(name: str) -> Response:
    promotion.rollback(web.home(), name, principal(),
                       reason=web.form_field("reason", required=False))
    return redirect(url_for("models.model_page", name=name), 303)


@bp.post("/models/<name>/rollout/advance")
@requires(PROMOTE)
def advance_form(name: str) -> Response:
    promotion.advance_rollouts(web.home(), name=name, actor=security.actor())
    return redirect(url_for("models.model_page", name=name), 303)


@bp.post("/models/<name>/rollout/abort")
@requires(ROLLBACK)
def abort_form(name: str) -> Response:
    promotion.abort_rollout(web.home(), name, actor=security.actor(),
                            reason=web.form_field("reason", required=False) or "aborted")
    return redirect(url_for("models.model_page", name=name), 303)


# --- API --------------------------------------------------------------------------------


@bp.get("/api/models/<name>/versions/<int:version>/gates")
@requires(PROMOTE)
@api(returns="the gate report {ref, target, baseline, passed, failed, gates, evaluation}")
def api_gates(name: str, version: int) -> Response:
    """Dry run of the promotion gates (?to=production|shadow|canary, ?breaking_change=1)."""
    to = _target(request.args.get("to", ""))
    breaking = request.args.get("breaking_change", "").lower() in TRUE
    return jsonify(dry_run(name, version, to, breaking))


@bp.post("/api/models/<name>/versions/<int:version>/promote")
@requires(PROMOTE)
@api(body=PROMOTE_BODY, returns="{ref, target, forced, report, move, rollout_id}; "
                                "409 {error, report} when a gate failed")
def api_promote(name: str, version: int) -> Response:
    """Promote a version (gates, signature, alias move or rollout start)."""
    try:
        result = do_promote(name, version)
    except promotion.PromotionRefused as exc:
        response = jsonify({"error": exc.message, "report": exc.report.as_dict()})
        response.status_code = 409
        return response
    return jsonify(result.as_dict())


@bp.post("/api/models/<name>/versions/<int:version>/approve")
@requires(APPROVE)
@api(body=COMMENT_BODY, returns="{ref, approver, role, comment, at}")
def api_approve(name: str, version: int) -> Response:
    """Approve a version's promotion (never one's own)."""
    return jsonify(promotion.approve(web.home(), _ref(name, version), principal(),
                                     comment=web.form_field("comment", required=False)))


@bp.post("/api/models/<name>/rollback")
@requires(ROLLBACK)
@api(body=REASON_BODY, returns="the alias move {name, alias, version, previous, changed}")
def api_rollback(name: str) -> Response:
    """Put back the production version the last production move replaced."""
    move = promotion.rollback(web.home(), name, principal(),
                              reason=web.form_field("reason", required=False))
    return jsonify(move.as_dict())


@bp.get("/api/models/<name>/rollouts")
@requires(READ)
@api(returns="{rollouts: [{id, state, candidate, baseline, plan, last_check, ...}]}")
def api_rollouts(name: str) -> Response:
    """The model's staged rollouts, newest first, with their last check."""
    return jsonify({"rollouts": rollouts(name)})


@bp.post("/api/models/<name>/rollout/advance")
@requires(PROMOTE)
@api(returns="{steps: [{rollout_id, state_before, state_after, decision, reasons, stats}]}")
def api_advance(name: str) -> Response:
    """Judge the model's rollout now: advance, roll back or wait."""
    steps = promotion.advance_rollouts(web.home(), name=name, actor=security.actor())
    return jsonify({"steps": [s.as_dict() for s in steps]})


@bp.post("/api/models/<name>/rollout/abort")
@requires(ROLLBACK)
@api(body=REASON_BODY, returns="{rollout}")
def api_abort(name: str) -> Response:
    """Roll back the model's rollout in progress by hand."""
    rollout_id = promotion.abort_rollout(
        web.home(), name, actor=security.actor(),
        reason=web.form_field("reason", required=False) or "aborted")
    return jsonify({"rollout": rollout_id})
