"""Logging in and out, and changing one's own password."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance.console import identity, security, web
from appliance.console.security import own_csrf, public, signed_in
from appliance.errors import BadInput

bp = Blueprint("session", __name__)


def _safe_next(target: str) -> str:
    """Only a path on this console: never an open redirect."""
    parts = urlsplit(target)
    if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc:
        return url_for("overview.page")
    return target


@bp.get("/login")
@public
def login_page() -> str:
    return render_template("login.html", status=200, message="",
                           next_url=_safe_next(request.args.get("next", "/")))


@bp.post("/login")
@public
@own_csrf
def login() -> Response:
    security.check_login_csrf()
    security.require_session_transport()
    previous = security.current_principal()
    caller = identity.login(
        web.get_db(), web.form_field("username"), request.form.get("password", ""),
        source=request.remote_addr or "unknown", config=web.config())
    if previous is not None:
        identity.logout(web.get_db(), previous)  # the session this browser held until now
    response = redirect(_safe_next(request.form.get("next", "/")), 303)
    security.set_cookie(response, security.SESSION_COOKIE, caller.session_id or "",
                        max_age=identity.session_max_age(web.config()))
    return response


@bp.post("/logout")
@signed_in
def logout() -> Response:
    principal = security.current_principal()
    if principal is not None:
        identity.logout(web.get_db(), principal)
    response = redirect(url_for("session.login_page"), 303)
    security.clear_cookie(response, security.SESSION_COOKIE)
    return response


@bp.get("/account/password")
@signed_in
def password_page() -> str:
    return render_template("password.html")


@bp.post("/account/password")
@signed_in
def change_password() -> Response:
    principal = security.current_principal()
    if principal is None or principal.session_id is None:
        raise BadInput("change a password from a console session, not with an API token")
    new = request.form.get("new_password", "")
    if new != request.form.get("confirm_password", ""):
        raise BadInput("field 'confirm_password' does not match the new password")
    identity.change_own_password(web.get_db(), principal, request.form.get("password", ""), new,
                                 config=web.config())
    response = redirect(url_for("session.login_page"), 303)
    security.clear_cookie(response, security.SESSION_COOKIE)
    return response
