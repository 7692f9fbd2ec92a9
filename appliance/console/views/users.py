"""Users and API tokens (admin only). A new token's secret is shown once, never again."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.console import identity, security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import BadInput

bp = Blueprint("users", __name__)
MANAGE = "users.admin"

USER_BODY = {"type": "object", "required": ["username", "role", "password"],
             "properties": {"username": {"type": "string"}, "role": {"type": "string"},
                            "password": {"type": "string"}}}
TOKEN_BODY = {"type": "object", "required": ["username", "name", "scopes"],
              "properties": {"username": {"type": "string"},
                             "name": {"type": "string", "description": "what it is for"},
                             "scopes": {"type": "string", "description": "comma-separated"},
                             "expires_days": {"type": "integer"}}}


def _caller() -> identity.Caller:
    caller = security.current_principal()
    if caller is None:
        raise RuntimeError("a state change without a caller passed authorisation")
    return caller


def _expires_days() -> int:
    raw = web.form_field("expires_days", required=False)
    if not raw:
        return int(web.config()["auth.token_days"])
    try:
        return int(raw)
    except ValueError as exc:
        raise BadInput("field 'expires_days' must be a whole number of days") from exc


def _create_token() -> Any:
    scopes = [s.strip() for s in web.form_field("scopes").split(",") if s.strip()]
    return identity.create_token(web.get_db(), web.form_field("username"),
                                 web.form_field("name"), scopes, _expires_days(),
                                 caller=_caller())


def _render(new_secret: str | None = None) -> str:
    db = web.get_db()
    return render_template("users.html", users=identity.list_users(db),
                           tokens=identity.list_tokens(db), roles=identity.ROLES,
                           scopes=identity.SCOPES, new_secret=new_secret)


@bp.get("/users")
@requires(MANAGE)
def index() -> str:
    return _render()


@bp.post("/users")
@requires(MANAGE)
def add_form() -> Response:
    identity.add_user(web.get_db(), web.form_field("username"), web.form_field("role"),
                      request.form.get("password", ""), caller=_caller())
    return redirect(url_for("users.index"), 303)


@bp.post("/users/<username>/disable")
@requires(MANAGE)
def disable_form(username: str) -> Response:
    identity.disable_user(web.get_db(), username, caller=_caller())
    return redirect(url_for("users.index"), 303)


@bp.post("/users/tokens")
@requires(MANAGE)
def token_form() -> str:
    return _render(new_secret=_create_token().token)


@bp.post("/users/tokens/<int:token_id>/revoke")
@requires(MANAGE)
def revoke_form(token_id: int) -> Response:
    identity.revoke_token(web.get_db(), token_id, caller=_caller())
    return redirect(url_for("users.index"), 303)


@bp.get("/api/users")
@requires(MANAGE)
@api(returns="{users: [...], tokens: [...]} (token secrets are never shown)")
def api_users() -> Response:
    """Users with their roles and state, and API tokens without their secrets."""
    db = web.get_db()
    return jsonify({"users": identity.list_users(db), "tokens": identity.list_tokens(db)})


@bp.post("/api/users")
@requires(MANAGE)
@api(body=USER_BODY, returns="{username}")
def api_add_user() -> Response:
    """Add a user with a role and an initial password."""
    body = request.get_json(silent=True) or {}
    username = web.form_field("username")
    identity.add_user(web.get_db(), username, web.form_field("role"),
                      str(body.get("password", "")), caller=_caller())
    return jsonify({"username": username})


@bp.post("/api/tokens")
@requires(MANAGE)
@api(body=TOKEN_BODY, returns="{id, expires_at, secret}: the secret is shown this once")
def api_create_token() -> Response:
    """Create an API token for a user with scopes; its secret is returned once."""
    new = _create_token()
    return jsonify({"id": new.id, "expires_at": new.expires_at, "secret": new.token})


@bp.post("/api/tokens/<int:token_id>/revoke")
@requires(MANAGE)
@api(returns="{revoked}")
def api_revoke_token(token_id: int) -> Response:
    """Revoke an API token now."""
    identity.revoke_token(web.get_db(), token_id, caller=_caller())
    return jsonify({"revoked": token_id})
