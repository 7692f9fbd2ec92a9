"""Who may do what: one declarative registry of permissions, and ``authorize``.

Every console route, API route, serving endpoint and CLI command names one of
these permissions; anything not granted is denied. A permission belongs to a
token scope (infer, read, write, admin) and is held by a set of roles. A
request's principal is a user (with a role) or an API token (with the role of
its user, narrowed to its scopes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.errors import Forbidden, Unauthorized


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"  # trains and deploys
    APPROVER = "approver"  # approves promotions
    VIEWER = "viewer"


class Scope(StrEnum):
    INFER = "infer"
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True)
class Permission:
    name: str
    scope: Scope
    roles: frozenset[Role]
    help: str


_ALL = frozenset(Role)
_OPS = frozenset({Role.ADMIN, Role.OPERATOR})


def _p(name: str, scope: Scope, roles: frozenset[Role], help: str) -> Permission:
    return Permission(name, scope, roles, help)


PERMISSIONS: dict[str, Permission] = {p.name: p for p in (
    _p("models.read", Scope.READ, _ALL, "List and show models, versions, aliases and cards."),
    _p("datasets.read", Scope.READ, _ALL, "List and show datasets."),
    _p("prompts.read", Scope.READ, _ALL, "List, show and diff prompts and their history."),
    _p("runs.read", Scope.READ, _ALL, "Show training runs, their metrics and logs."),
    _p("evals.read", Scope.READ, _ALL,
       "Show evaluation sets and runs, their reports and comparisons."),
    _p("jobs.read", Scope.READ, _ALL, "List and show jobs and schedules."),
    _p("monitoring.read", Scope.READ, _ALL, "Read metrics, drift reports and alerts."),
    _p("audit.read", Scope.READ, _ALL, "Read and verify the audit log."),
    _p("infer", Scope.INFER, _ALL, "Send inference requests to served models."),
    _p("datasets.write", Scope.WRITE, _OPS, "Register datasets."),
    _p("train", Scope.WRITE, _OPS, "Submit training and retraining jobs."),
    _p("jobs.write", Scope.WRITE, _OPS, "Submit, cancel and schedule jobs."),
    _p("models.write", Scope.WRITE, _OPS, "Import models and move non-production aliases."),
    _p("models.promote", Scope.WRITE, _OPS, "Request promotion of a version to production."),
    _p("models.approve", Scope.WRITE, frozenset({Role.ADMIN, Role.APPROVER}),
       "Approve a promotion (never of a version one trained oneself)."),
    _p("models.rollback", Scope.WRITE, _OPS, "Roll production back to an earlier version."),
    _p("prompts.write", Scope.WRITE, _OPS, "Register prompts and move non-production aliases."),
    _p("prompts.promote", Scope.WRITE, _OPS, "Promote a prompt version to production."),
    _p("prompts.rollback", Scope.WRITE, _OPS, "Roll a prompt's production back."),
    _p("serving.deploy", Scope.WRITE, _OPS, "Load and unload models in the serving daemon."),
    _p("feedback.write", Scope.WRITE, _OPS, "Record delayed labels for served predictions."),
    _p("audit.write", Scope.ADMIN, frozenset({Role.ADMIN}), "Sign checkpoints, export, rotate keys."),
    _p("users.admin", Scope.ADMIN, frozenset({Role.ADMIN}), "Manage users and others' tokens."),
    _p("config.admin", Scope.ADMIN, frozenset({Role.ADMIN}), "Change settings; back up, restore."),
    _p("admin", Scope.ADMIN, frozenset({Role.ADMIN}), "Anything else reserved to admins."),
)}

SCOPE_IMPLIES: dict[Scope, frozenset[Scope]] = {
    Scope.INFER: frozenset({Scope.INFER}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.READ, Scope.WRITE}),
    Scope.ADMIN: frozenset(Scope),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user, or a token acting for a user with narrower scopes."""

    name: str
    role: Role
    scopes: frozenset[Scope] | None = None  # None: a user session, not limited by scope
    via: str = "session"  # session, token, local

    def permissions(self) -> frozenset[str]:
        allowed = {n for n, p in PERMISSIONS.items() if self.role in p.roles}
        if self.scopes is not None:
            granted = set().union(*(SCOPE_IMPLIES[s] for s in self.scopes)) if self.scopes else set()
            allowed = {n for n in allowed if PERMISSIONS[n].scope in granted}
        return frozenset(allowed)


def authorize(principal: Principal | None, permission: str) -> Principal:
    """Deny by default: no principal is 401, a principal without the permission is 403."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; declare it in PERMISSIONS")
    if principal is None:
        raise Unauthorized("sign in or send an API token")
    if permission not in principal.permissions():
        raise Forbidden(f"{principal.name} ({principal.role.value}"
                        + (f", token scopes {','.join(sorted(s.value for s in principal.scopes))}"
                           if principal.scopes is not None else "")
                        + f") may not {PERMISSIONS[permission].help[0].lower()}"
                        + PERMISSIONS[permission].help[1:].rstrip(".")
                        + f" (needs {permission})")
    return principal


def check_separation_of_duties(trained_by: str, approver: Principal) -> None:
    """The user who trained a version may not approve its promotion."""
    if trained_by and trained_by == approver.name:
        raise Forbidden(f"{approver.name} trained this version and so can not approve it; "
                        "another approver must")
