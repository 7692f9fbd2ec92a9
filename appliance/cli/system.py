"""Set-up and health: ``init``, ``doctor``, ``config show``."""

from __future__ import annotations

import click

from appliance.audit.service import ensure_key
from appliance.cli._common import FIRST_ADMIN_HINT, Env, echo_json, pass_env
from appliance.config import SETTINGS
from appliance.storage.home import init_home
from appliance.system.doctor import Check, run_checks


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print what was created as JSON.")
@pass_env
def init(env: Env, as_json: bool) -> None:
    """Create the data directory and databases, and apply pending migrations.

    Safe to run again: existing data is kept and only pending migrations run.
    """
    report = init_home(env.home)
    key = ensure_key(env.home, env.actor)
    if key.created:
        report.created.append(str(key.public_path))
    if as_json:
        echo_json({"home": str(env.home.root), "created": report.created,
                   "migrations": report.migrations, "audit_key": key.vkey})
        return
    for path in report.created:
        click.echo(f"created {path}")
    for database, names in report.migrations.items():
        for name in names:
            click.echo(f"migrated {database}.db: {name}")
    if not report.created and not any(report.migrations.values()):
        click.echo(f"{env.home.root} is already initialised and current")
    else:
        click.echo(f"initialised {env.home.root}")
    if not _has_admin(env):
        click.echo(f"no admin yet: {FIRST_ADMIN_HINT.format(home=env.home.root)}")


def _has_admin(env: Env) -> bool:
    from appliance.auth.users import list_users

    with env.home.db() as db:
        return any(u["role"] == "admin" and not u["disabled"] for u in list_users(db))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@pass_env
def doctor(env: Env, as_json: bool) -> None:
    """Check the installation: databases, migrations, blobs, permissions, disk, GPUs, the
    bundle's profile against the GPUs, and whether torch and onnxruntime use them.

    Exits 1 when any check fails.
    """

    def show(check: Check) -> None:
        if not as_json:
            mark = "ok  " if check.ok else "FAIL"
            click.echo(f"{mark} {check.name}: {check.detail}")

    checks = run_checks(env.home, env.config, progress=show)
    failed = [c for c in checks if not c.ok]
    if as_json:
        echo_json({"ok": not failed, "checks": [c.as_dict() for c in checks]})
    elif failed:
        click.echo(f"{len(failed)} of {len(checks)} checks failed", err=True)
    if failed:
        raise SystemExit(1)


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@pass_env
def config_show(env: Env, as_json: bool) -> None:
    """Print the effective configuration: every setting, its value and where it came from."""
    cfg = env.config
    if as_json:
        echo_json({"source": str(cfg.source) if cfg.source else None, "settings": cfg.as_dict()})
        return
    click.echo(f"# source: {cfg.source or 'defaults (no config file)'}")
    for s in SETTINGS:
        origin = "file" if s.name in cfg.from_file else "default"
        click.echo(f"{s.name}: {cfg[s.name]!r}  # {origin}: {s.help}")


COMMANDS = [init, doctor, config_group]
