"""One error style for the command line: one line on stderr, exit 2 for bad usage or
input, exit 1 for a failed operation.

Click's own usage errors (an unknown option, a value outside a choice) are caught here
too, so that they read like every other error instead of click's usage block. Errors
of the operating system that a user causes (a port in use, a directory that is not
there or not writable) and a missing optional module are failures, not bugs: one line,
no traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

import click

from appliance.errors import ApplianceError

USAGE = 2
FAILED = 1


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def os_error_message(exc: OSError) -> str:
    """``port 8080 is already in use``, ``No such file or directory: '/x'``."""
    text = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        return f"address already in use ({text}); stop what holds the port or choose another"
    name = exc.filename
    if name is not None:
        return f"{text}: {os.fsdecode(name)!s}"
    return text


class ApplianceGroup(click.Group):
    """Runs a command in click's non-standalone mode and renders every error as one line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:  # --help, --version, ctx.exit(n)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            fail(f"{where}{exc.format_message()}", USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", FAILED)
        except ApplianceError as exc:
            fail(exc.message, exc.exit_code)
        except BrokenPipeError:
            # The reader went away (``appliance models list | head``): nothing to say.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(FAILED)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except ModuleNotFoundError as exc:
            fail(f"this command needs the Python module {exc.name!r}, which is not installed", FAILED)
        except OSError as exc:
            fail(os_error_message(exc), FAILED)
        # ``ctx.exit(n)`` inside a command comes back here as n.
        sys.exit(result if isinstance(result, int) else 0)
