"""The ``appliance`` command: parse, call one service function, print.

Commands live in the modules of this package, each exporting ``COMMANDS``;
they are collected here in module-name order. Expected failures are
``ApplianceError``s, turned into one line on stderr and exit 1 (a failed
operation) or 2 (bad usage or input). Nothing else is caught: a traceback
means a bug.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from appliance import __version__
from appliance.cli._common import Env
from appliance.errors import ApplianceError


class ApplianceGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApplianceError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            sys.stderr.close()
            ctx.exit(1)


@click.group(cls=ApplianceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: APPLIANCE_HOME, else the config's 'home', else /var/lib/appliance).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: APPLIANCE_CONFIG, else /etc/appliance/appliance.yaml).",
)
@click.version_option(__version__, prog_name="appliance")
@click.pass_context
def main(ctx: click.Context, home: str | None, config_file: str | None) -> None:
    """The appliance: train, version, serve, monitor and audit models on one server, offline."""
    ctx.obj = Env(home_option=home, config_option=config_file)


def _collect() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_collect()
