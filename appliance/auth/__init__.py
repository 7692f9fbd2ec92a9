"""Access control: users and roles, API tokens, sessions, and the permission registry."""

from datetime import timedelta

from appliance.auth.permissions import (
    PERMISSIONS,
    Principal,
    Role,
    Scope,
    authorize,
    check_separation_of_duties,
)
from appliance.auth.sessions import SessionPolicy
from appliance.auth.users import Throttle
from appliance.config import Config


def throttle_from(config: Config) -> Throttle:
    """The failed sign-in throttle the configuration asks for."""
    return Throttle(max_failures=config["auth.login_max_failures"],
                    window=timedelta(minutes=config["auth.login_window_minutes"]))


def session_policy_from(config: Config) -> SessionPolicy:
    """The console session timeouts the configuration asks for."""
    return SessionPolicy(idle=timedelta(minutes=config["auth.session_idle_minutes"]),
                         absolute=timedelta(hours=config["auth.session_absolute_hours"]))


__all__ = ["PERMISSIONS", "Principal", "Role", "Scope", "SessionPolicy", "Throttle",
           "authorize", "check_separation_of_duties", "session_policy_from", "throttle_from"]
