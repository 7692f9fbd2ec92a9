"""One exception hierarchy for the whole appliance.

Services raise these; each edge maps them in one place: the CLI to an exit
code and a one-line message, the web layers to an HTTP status and
``{"error": "..."}``. Anything that is not an ``ApplianceError`` is a bug and
is allowed to surface as one.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """An expected failure, with the message a user should read."""

    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, where there is one (OpenAI's 'param')

    def __str__(self) -> str:
        return self.message


class BadInput(ApplianceError):
    """The caller gave something malformed: a bad file, field or argument."""

    status = 400
    exit_code = 2


class ConfigError(BadInput):
    """The configuration file is unreadable, or names an unknown key or bad value."""


class NotFound(ApplianceError):
    status = 404
    exit_code = 2


class Unauthorized(ApplianceError):
    status = 401
    exit_code = 1


class Forbidden(ApplianceError):
    status = 403
    exit_code = 1


class Conflict(ApplianceError):
    """The request is valid but clashes with the current state."""

    status = 409
    exit_code = 1


class Unavailable(ApplianceError):
    """Temporarily unable to serve: not ready, or overloaded."""

    status = 503
    exit_code = 1


class OperationFailed(ApplianceError):
    """The operation ran and failed, or a check found a problem."""

    status = 500
    exit_code = 1


class StorageError(OperationFailed):
    """The data directory, database or blob store can not be used as it is."""


class NotInitialised(StorageError):
    """The data directory is not there or was never initialised: the user named the wrong
    ``--home`` or has not run ``appliance init``, so it is bad input (exit 2), while code
    that retries on storage errors still catches it as one."""

    status = 404
    exit_code = 2
