"""Who is asking, may they, and the headers every answer carries.

- Every view declares its permission with ``@requires(PERMISSION)``, a name
  of ``appliance.auth``'s registry (or ``@public``, or ``@signed_in`` for what
  any signed-in caller may do to their own session: log out, change their
  password); a request whose view declares none is refused (deny by default),
  and ``tests/test_console_matrix.py`` walks the URL map for them.
- A browser is identified by a server-side session (``appliance.auth``) whose
  opaque token is the cookie ``__Host-appliance-session``: Secure, HttpOnly,
  SameSite=Strict, Path=/. Development exception: over plain HTTP from a
  loopback client, with ``console.insecure_loopback`` on, the cookie is
  ``appliance-session`` without Secure (a browser refuses ``__Host-`` cookies
  that are not Secure). Sessions over plain HTTP from anywhere else are refused.
- A script sends ``Authorization: Bearer TOKEN`` (an API token); it carries no
  cookie, so it needs no CSRF token.
- Every state-changing request on a cookie session carries the CSRF token
  (form field ``csrf_token`` or header ``X-CSRF-Token``): an HMAC of the
  session token, so it is bound to the session and needs no storage. The login
  form, before there is a session, uses a double-submit cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from werkzeug.wrappers import Response

from appliance.console import identity, web
from appliance.console.identity import Caller
from appliance.errors import BadInput, ConfigError, Forbidden, Unauthorized

PUBLIC = "public"
SIGNED_IN = "signed-in"
SESSION_COOKIE = "appliance-session"
LOGIN_CSRF_COOKIE = "appliance-login-csrf"
HOST_PREFIX = "__Host-"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
       "object-src 'none'")
# A self-contained document the console serves as it is (an evaluation run's report): its
# own inline CSS and nothing else; no script, no fetch, sandboxed (no script, no origin).
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                "form-action 'none'; base-uri 'none'; sandbox")

F = TypeVar("F", bound=Callable[..., Any])


def requires(permission: str) -> Callable[[F], F]:
    """Declare the permission a view needs (a name of ``appliance.auth``'s registry;
    ``check_declared`` refuses an unknown one when the app is built)."""

    def mark(view: F) -> F:
        view.permission = permission  # type: ignore[attr-defined]
        return view

    return mark


public = requires(PUBLIC)
signed_in = requires(SIGNED_IN)


def own_csrf(view: F) -> F:
    """Mark a public form that checks its own CSRF token before there is a session (the
    login form's double submit), so a caller who is already signed in can still send it."""
    view.own_csrf = True  # type: ignore[attr-defined]
    return view


def declare_static(app: Flask) -> None:
    """Flask's own static view serves the package's CSS and JS, to anyone."""
    static = app.view_functions.get("static")
    if static is not None:
        static.permission = PUBLIC  # type: ignore[union-attr]


def check_declared(app: Flask) -> None:
    """Fail at start-up on a view whose permission is not in auth's registry."""
    known = identity.permission_names() | {PUBLIC, SIGNED_IN}
    for endpoint, view in app.view_functions.items():
        permission = getattr(view, "permission", None)
        if permission is not None and permission not in known:
            raise RuntimeError(f"view {endpoint} declares unknown permission {permission!r}")


def permission_of(app: Any, endpoint: str) -> str | None:
    view = app.view_functions.get(endpoint)
    return getattr(view, "permission", None)


# --- transport ------------------------------------------------------------------------


def _client_is_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def plain_loopback() -> bool:
    """True for the documented development exception: plain HTTP from this machine."""
    return (not request.is_secure and _client_is_loopback()
            and bool(web.config()["console.insecure_loopback"]))


def cookie_name(base: str) -> str:
    return base if plain_loopback() else HOST_PREFIX + base


def require_session_transport() -> None:
    if not request.is_secure and not plain_loopback():
        raise Forbidden("console sessions need TLS: set console.tls_cert and console.tls_key, "
                        "or put a TLS proxy in front")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[Network]:
    """console.allowed_networks, read once at start: a bad entry stops the console with
    an error naming the setting, rather than failing every request."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"console.allowed_networks: {item!r} is not a network; give "
                              "CIDRs such as 10.0.0.0/8, comma-separated") from exc
    return networks


def _check_network() -> None:
    allowed: list[Network] = current_app.config["APPLIANCE_ALLOWED_NETWORKS"]
    if not allowed:
        return
    try:
        client = ipaddress.ip_address(request.remote_addr or "")
    except ValueError as exc:
        raise Forbidden("client address unknown") from exc
    if any(client in network for network in allowed):
        return
    raise Forbidden(f"client {client} is not in console.allowed_networks")


def set_cookie(response: Response, base: str, value: str, *, max_age: int | None) -> None:
    response.set_cookie(
        cookie_name(base), value, max_age=max_age, path="/", secure=not plain_loopback(),
        httponly=True, samesite="Strict",
    )


def clear_cookie(response: Response, base: str) -> None:
    response.delete_cookie(cookie_name(base), path="/", secure=not plain_loopback(),
                           httponly=True, samesite="Strict")


# --- identity of the request ----------------------------------------------------------


def current_principal() -> Caller | None:
    return g.get("principal")


def _load_principal() -> None:
    g.principal = None
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, bearer = header.partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            raise Unauthorized("Authorization must be 'Bearer TOKEN'")
        g.principal = identity.from_bearer(web.get_db(), bearer.strip())
        return
    session_id = request.cookies.get(cookie_name(SESSION_COOKIE))
    if session_id:
        require_session_transport()
        g.principal = identity.from_session(web.get_db(), session_id, config=web.config())
        if g.principal is None:
            g.clear_session_cookie = True


def csrf_token() -> str:
    """The token forms and cookie-authenticated API calls carry; '' without a session."""
    principal = current_principal()
    if principal is None or principal.session_id is None:
        return ""
    return hmac.new(principal.session_id.encode(), b"appliance-console-csrf",
                    hashlib.sha256).hexdigest()


def login_csrf_token() -> str:
    """The login form's token, mirrored in a cookie (double submit) set after the request."""
    if "login_csrf" not in g:
        g.login_csrf = request.cookies.get(cookie_name(LOGIN_CSRF_COOKIE)) or \
            secrets.token_urlsafe(24)
    token: str = g.login_csrf
    return token


def check_login_csrf() -> None:
    cookie = request.cookies.get(cookie_name(LOGIN_CSRF_COOKIE), "")
    sent = request.form.get("csrf_token", "")
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise BadInput("the login form expired or was not sent by this console; reload it")


def _check_csrf() -> None:
    principal = current_principal()
    if request.method in SAFE_METHODS or principal is None or principal.session_id is None:
        return
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    if not sent or not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


def can(permission: str) -> bool:
    principal = current_principal()
    return principal is not None and identity.allowed(principal, permission)


def authorize() -> None:
    """before_request: identify, check transport, CSRF and the view's permission."""
    if request.routing_exception is not None:
        return  # 404/405 follow, with nothing to protect
    _check_network()
    permission = permission_of(current_app, request.endpoint or "")
    if permission is None:
        raise Forbidden("this route declares no permission, so it is refused")
    if permission == PUBLIC and request.endpoint == "static":
        g.principal = None
        return
    _load_principal()
    if permission == PUBLIC:
        view = current_app.view_functions.get(request.endpoint or "")
        if (request.method not in SAFE_METHODS and current_principal() is not None
                and not getattr(view, "own_csrf", False)):
            _check_csrf()
        return
    principal = current_principal()
    if principal is None:
        raise Unauthorized("log in to see this page")
    _check_csrf()
    if permission != SIGNED_IN:
        identity.authorize(principal, permission)


def add_headers(response: Response) -> Response:
    """after_request: security headers everywhere; nothing but static assets is cached."""
    if response.headers.get("Content-Security-Policy") != DOCUMENT_CSP:
        response.headers["Content-Security-Policy"] = CSP  # the one other policy a view may set
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    if g.get("clear_session_cookie"):
        clear_cookie(response, SESSION_COOKIE)
    if "login_csrf" in g and not request.cookies.get(cookie_name(LOGIN_CSRF_COOKIE)):
        set_cookie(response, LOGIN_CSRF_COOKIE, g.login_csrf, max_age=3600)
    return response


def init_app(app: Flask) -> None:
    app.config["APPLIANCE_ALLOWED_NETWORKS"] = parse_networks(
        app.config["APPLIANCE_CONFIG"]["console.allowed_networks"])
    app.before_request(authorize)
    app.after_request(add_headers)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"principal": current_principal(), "csrf_token": csrf_token, "can": can,
                "login_csrf_token": login_csrf_token}


def actor() -> str:
    """The audit actor of the request's principal (views that change state need one)."""
    principal = current_principal()
    if principal is None:
        raise RuntimeError("a state change without a principal passed authorisation")
    return principal.actor
