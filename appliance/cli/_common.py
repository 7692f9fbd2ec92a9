"""What every command shares: the resolved configuration, data directory and actor."""

from __future__ import annotations

import getpass
import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from appliance.auth.permissions import Principal
    from appliance.config import Config
    from appliance.storage.home import Home


class Env:
    """Resolved lazily, so ``--help`` and bad-usage errors never touch the disk."""

    def __init__(self, home_option: str | None, config_option: str | None) -> None:
        self.home_option = home_option
        self.config_option = config_option

    @cached_property
    def config(self) -> Config:
        from appliance.config import load_config

        return load_config(self.config_option)

    @cached_property
    def home(self) -> Home:
        from appliance.config import resolve_home
        from appliance.storage.home import Home

        return Home.from_config(resolve_home(self.config, self.home_option), self.config)

    @cached_property
    def principal(self) -> Principal | None:
        """The local identity: root and the service user are admins; another OS user is
        the appliance user of the same name, or nobody."""
        from appliance.auth.users import local_principal

        if not self.home.db_path.exists():
            return local_principal(None, os_user())
        with self.home.db() as db:
            return local_principal(db, os_user())

    @property
    def actor(self) -> str:
        """Who the CLI acts as, recorded in audit entries."""
        principal = self.principal
        return principal.name if principal else f"local:{os_user()}"


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


pass_env = click.make_pass_decorator(Env)

#: What ``init`` and ``users list`` say while the appliance has no admin.
FIRST_ADMIN_HINT = ("make the first with 'appliance --home {home} users add NAME --role admin "
                    "--generate-password', then sign in to the console as NAME")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
