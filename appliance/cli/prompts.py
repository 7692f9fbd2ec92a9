"""``appliance prompts add|list|show|diff|history|alias|policy|promote|rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from appliance import prompts
from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import BadInput, Unauthorized

if TYPE_CHECKING:
    from appliance.auth import Principal


def _principal(env: Env) -> Principal:
    """Promotion and rollback act for an appliance user, whose role decides (as for models)."""
    principal = env.principal
    if principal is None:
        raise Unauthorized(f"{env.actor} is not an appliance user; ask an admin to run "
                           "'appliance users add' for this account")
    return principal


@click.group("prompts")
def prompts_group() -> None:
    """The prompt registry: templates for a language model, versions, aliases, promotion."""


@prompts_group.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def prompts_add(env: Env, name: str, file: str, as_json: bool) -> None:
    """Register FILE (a prompt's YAML) as the next version of prompt NAME; print NAME@VERSION.

    The same content gives back the existing version. A bad file exits 2 naming the key
    and line at fault, and registers nothing.
    """
    data = prompts.read_file(file)
    with env.home.db() as db:
        version, created = prompts.add_prompt(db, name, data, actor=env.actor, source=file)
    if as_json:
        echo_json({**version.as_dict(), "created": created})
        return
    click.echo(version.ref)
    if not created:
        click.echo(f"(already registered as {version.ref})", err=True)


@prompts_group.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the prompts (or versions) as JSON.")
@pass_env
def prompts_list(env: Env, name: str | None, as_json: bool) -> None:
    """Every prompt with its latest version, model and aliases; or NAME's versions, newest
    first."""
    with env.home.db() as db:
        if name is not None:
            versions = prompts.list_versions(db, name)
            if as_json:
                echo_json([v.as_dict() for v in versions])
                return
            click.echo(f"{'VERSION':>7}  {'MODEL':<24} {'ALIASES':<24} {'CREATED':<20} BY")
            for v in versions:
                click.echo(f"{v.version:>7}  {v.spec.model:<24} "
                           f"{','.join(v.aliases) or '-':<24} {v.created_at[:19]:<20} "
                           f"{v.created_by}")
            return
        rows = prompts.list_prompts(db)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no prompts; register one with 'appliance prompts add NAME FILE.yaml'")
        return
    click.echo(f"{'NAME':<24} {'LATEST':>6} {'VERSIONS':>8}  {'MODEL':<24} ALIASES")
    for r in rows:
        aliases = " ".join(f"{a}={v}" for a, v in r["aliases"].items()) or "-"
        click.echo(f"{r['name']:<24} {r['latest'] or '-':>6} {r['versions']:>8}  "
                   f"{r['model'] or '-':<24} {aliases}")


@prompts_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def prompts_show(env: Env, ref: str, as_json: bool) -> None:
    """Show NAME@VERSION or NAME@ALIAS (NAME alone: production, else the latest): its
    canonical YAML, digest and aliases."""
    with env.home.db() as db:
        version = prompts.resolve(db, ref)
    if as_json:
        echo_json(version.as_dict())
        return
    click.echo(f"# {version.ref}  sha256:{version.digest}")
    click.echo(f"# registered {version.created_at} by {version.created_by}; aliases: "
               f"{', '.join(version.aliases) or '-'}")
    click.echo(version.spec.canonical_yaml(), nl=False)


@prompts_group.command("diff")
@click.argument("a")
@click.argument("b")
@pass_env
def prompts_diff(env: Env, a: str, b: str) -> None:
    """A unified diff of two versions' canonical YAML (A and B: NAME@VERSION or NAME@ALIAS)."""
    with env.home.db() as db:
        text = prompts.diff(db, a, b)
    if text:
        click.echo(text, nl=False)
    else:
        click.echo(f"{a} and {b} are the same")


@prompts_group.command("history")
@click.argument("name")
@click.option("--alias", default=None,
              help="Only this alias's moves (with --at: default production).")
@click.option("--at", "at_time", default=None,
              help="Print only the version the alias pointed at at this ISO 8601 time: the "
                   "one that answered then, for production.")
@click.option("--json", "as_json", is_flag=True, help="Print the history as JSON.")
@pass_env
def prompts_history(env: Env, name: str, alias: str | None, at_time: str | None,
                    as_json: bool) -> None:
    """Every alias move of prompt NAME, oldest first: when, who, from and to which version."""
    with env.home.db() as db:
        if at_time is not None:
            alias = alias or prompts.PRODUCTION
            version = prompts.alias_at(db, name, alias, at_time)
            if as_json:
                echo_json({"name": name, "alias": alias, "at": at_time, "version": version})
            else:
                click.echo(f"{name}@{version}" if version is not None else
                           f"prompt {name} had no alias '{alias}' at {at_time}")
            return
        rows = prompts.alias_history(db, name, alias)
    if as_json:
        echo_json(rows)
        return
    for h in rows:
        reason = f"  ({h['reason']})" if h["reason"] else ""
        click.echo(f"{h['at']} {h['actor']}: {h['alias']} {h['previous'] or '-'} -> "
                   f"{h['version'] or '(removed)'}{reason}")


@prompts_group.command("alias")
@click.argument("ref")
@click.argument("alias")
@click.option("--reason", default="", help="Why, recorded in the alias history and audit log.")
@pass_env
def prompts_alias(env: Env, ref: str, alias: str, reason: str) -> None:
    """Point ALIAS (staging or any name but production) at the version REF names."""
    with env.home.db() as db:
        move = prompts.set_alias(db, ref, alias, actor=env.actor, reason=reason)
    if move.changed:
        click.echo(f"{move.name}@{move.alias}: {move.previous or '-'} -> {move.version}")
    else:
        click.echo(f"{move.name}@{move.alias} already points at {move.version}")


@prompts_group.command("promote")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Promote despite failed gates (admin only).")
@click.option("--reason", default="", help="Why; required with --force, kept in the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print the promotion as JSON.")
@pass_env
def prompts_promote(env: Env, ref: str, force: bool, reason: str, as_json: bool) -> None:
    """Run the prompt gates on NAME@VERSION and, when they pass, make it production."""
    from appliance.promotion.prompt_gates import promote_prompt

    with env.home.db() as db:
        done = promote_prompt(db, ref, _principal(env), force=force, reason=reason)
    if as_json:
        echo_json(done.as_dict())
        return
    for g in done.gates:
        click.echo(f"{g.gate:<36} {'pass' if g.passed else 'FAIL'}  {g.detail}")
    if done.forced:
        click.echo(f"FORCED by {env.actor}: {reason}")
    click.echo(f"{done.ref} is now production (was {done.move.previous or '-'})")


@prompts_group.command("policy")
@click.argument("name")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the policy as JSON.")
@pass_env
def prompts_policy(env: Env, name: str, file: str | None, as_json: bool) -> None:
    """Show the promotion policy of prompt NAME, or set it from FILE.yaml (the evaluation
    set its versions are scored on, least scores, regression, latency and tokens)."""
    from appliance.promotion import prompt_gates

    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{file}: can not be read: {exc}") from None
        with env.home.db() as db:
            policy = prompt_gates.set_policy(db, name, text, actor=env.actor)
    else:
        with env.home.db() as db:
            found = prompt_gates.get_policy(db, name)
        if found is None:
            raise BadInput(f"prompt {name} has no promotion policy; its versions are promoted "
                           "without gates (set one: appliance prompts policy NAME FILE.yaml)")
        policy = found
    if as_json:
        echo_json(policy)
        return
    click.echo(yaml.safe_dump(policy, sort_keys=False).rstrip())


@prompts_group.command("rollback")
@click.argument("name")
@click.option("--reason", default="", help="Why, kept in the alias history and audit log.")
@pass_env
def prompts_rollback(env: Env, name: str, reason: str) -> None:
    """Put back the production version that the last production move replaced."""
    with env.home.db() as db:
        move = prompts.rollback(db, name, _principal(env), reason=reason)
    click.echo(f"{name}@production: {move.previous} -> {move.version}")


COMMANDS = [prompts_group]
