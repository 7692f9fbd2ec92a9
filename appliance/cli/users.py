"""Users and API tokens: ``users add|list|disable|passwd``, ``tokens create|list|revoke``."""

from __future__ import annotations

import secrets
import sys

import click

from appliance.auth import authorize
from appliance.auth import tokens as tokens_service
from appliance.auth import users as users_service
from appliance.auth.permissions import Role, Scope
from appliance.cli._common import FIRST_ADMIN_HINT, Env, echo_json, pass_env
from appliance.errors import BadInput


def _password(password_stdin: bool, prompt: str) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


@click.group("users")
def users_group() -> None:
    """Manage the appliance's users and their roles."""


@users_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True,
              help="admin, operator (train, deploy), approver (approve promotions) or viewer.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not a prompt.")
@click.option("--generate-password", is_flag=True,
              help="Make a random password and print it once; change it after the first login.")
@pass_env
def users_add(env: Env, name: str, role: str, password_stdin: bool,
              generate_password: bool) -> None:
    """Add a user with a role; the password is asked for (12 characters or more)."""
    authorize(env.principal, "users.admin")
    if password_stdin and generate_password:
        raise BadInput("--password-stdin and --generate-password exclude each other")
    password = (secrets.token_urlsafe(18) if generate_password
                else _password(password_stdin, f"password for {name}"))
    with env.home.db() as db:
        users_service.add_user(db, name, role, password, actor=env.actor)
    click.echo(f"added user {name} ({role})")
    if generate_password:
        click.echo(f"one-time password for {name}: {password}  (shown once: change it with "
                   f"'appliance users passwd {name}' or in the console)")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@pass_env
def users_list(env: Env, as_json: bool) -> None:
    """List users, their roles and whether they are disabled."""
    authorize(env.principal, "users.admin")
    with env.home.db() as db:
        rows = users_service.list_users(db)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no users yet; {FIRST_ADMIN_HINT.format(home=env.home.root)}")
        return
    for r in rows:
        state = "disabled" if r["disabled"] else "active"
        click.echo(f"{r['name']:<20} {r['role']:<9} {state:<8} since {r['created_at']}")


@users_group.command("disable")
@click.argument("name")
@pass_env
def users_disable(env: Env, name: str) -> None:
    """Disable a user: sign-ins, sessions and tokens stop working."""
    authorize(env.principal, "users.admin")
    with env.home.db() as db:
        users_service.disable_user(db, name, actor=env.actor)
    click.echo(f"disabled user {name}")


@users_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not a prompt.")
@pass_env
def users_passwd(env: Env, name: str, password_stdin: bool) -> None:
    """Set a user's password (your own, or anyone's as an admin); ends their sessions."""
    if env.principal is None or env.principal.name != name:
        authorize(env.principal, "users.admin")
    password = _password(password_stdin, f"new password for {name}")
    with env.home.db() as db:
        users_service.set_password(db, name, password, actor=env.actor)
    click.echo(f"password of {name} changed; their sessions were ended")


@click.group("tokens")
def tokens_group() -> None:
    """Manage API tokens for scripts and inference clients."""


@tokens_group.command("create")
@click.option("--user", required=True, help="The user the token acts for.")
@click.option("--name", required=True, help="What the token is for (e.g. 'ci-deploy').")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice([s.value for s in Scope]),
              help="infer, read, write or admin; repeat for several.")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Days until the token expires (default: the auth.token_days setting).")
@pass_env
def tokens_create(env: Env, user: str, name: str, scopes: tuple[str, ...],
                  days: int | None) -> None:
    """Create a token and print it once; only its hash is kept."""
    if env.principal is None or env.principal.name != user:
        authorize(env.principal, "users.admin")
    with env.home.db() as db:
        new = tokens_service.create_token(db, user, name, scopes, actor=env.actor,
                                           days=days or env.config["auth.token_days"])
    click.echo(f"token {new.id} for {user}, expires {new.expires_at}; shown once, keep it now:",
               err=True)
    click.echo(new.token)


@tokens_group.command("list")
@click.option("--user", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON.")
@pass_env
def tokens_list(env: Env, user: str | None, as_json: bool) -> None:
    """List tokens (never the tokens themselves): owner, scopes, expiry, revocation."""
    if env.principal is None or env.principal.name != user:
        authorize(env.principal, "users.admin")
    with env.home.db() as db:
        rows = tokens_service.list_tokens(db, user)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        state = {"revoked": f"revoked {r['revoked_at']}", "expired": f"expired {r['expires_at']}",
                 "user disabled": "user disabled"}.get(r["state"], f"expires {r['expires_at']}")
        click.echo(f"{r['id']:>4} {r['user']:<16} {r['name']:<20} {','.join(r['scopes']):<16} {state}")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
@pass_env
def tokens_revoke(env: Env, token_id: int) -> None:
    """Revoke a token by its id; it stops working at once."""
    with env.home.db() as db:
        if env.principal is None or env.principal.name != tokens_service.token_owner(db, token_id):
            authorize(env.principal, "users.admin")
        tokens_service.revoke_token(db, token_id, actor=env.actor)
    click.echo(f"revoked token {token_id}")


COMMANDS = [users_group, tokens_group]
