"""The audit trail: ``audit log|verify|checkpoint|export|rotate-key``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from appliance.audit import service
from appliance.audit.export import export
from appliance.auth import authorize
from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import BadInput

READ = "audit.read"
WRITE = "audit.write"  # sign checkpoints, export, rotate keys


@click.group("audit")
def audit_group() -> None:
    """Read, verify, anchor and export the signed audit trail."""


@audit_group.command("log")
@click.option("--since", help="Only entries at or after this UTC time (ISO 8601, e.g. 2026-01-31).")
@click.option("--actor", help="Only entries by this actor.")
@click.option("--action", help="Only entries of this action (e.g. model.promote).")
@click.option("--target", help="Only entries about this target (e.g. model:fraud@3).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show only the newest N matching entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@pass_env
def audit_log(env: Env, since: str | None, actor: str | None, action: str | None,
              target: str | None, limit: int | None, as_json: bool) -> None:
    """List audit entries, oldest first."""
    authorize(env.principal, READ)
    with env.home.db() as db:
        rows = service.entries(db, since=since, actor=actor, action=action, target=target,
                               limit=limit)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        details = json.dumps(r["details"], sort_keys=True, ensure_ascii=False)
        click.echo(f"{r['seq']:>6} {r['ts']} {r['actor']} {r['action']} {r['target']} {details}")


@audit_group.command("verify")
@click.option("--anchor", type=click.Path(dir_okay=False),
              help="A checkpoint kept off the box; proves the log extends it (no truncation or rewrite).")
@click.option("--pubkey", type=click.Path(dir_okay=False),
              help="File holding the public key to trust (default: the log's first key).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_env
def audit_verify(env: Env, anchor: str | None, pubkey: str | None, as_json: bool) -> None:
    """Recompute every entry, hash, root and signature; exit 1 naming the first bad entry."""
    authorize(env.principal, READ)
    trusted = None
    if pubkey:
        try:
            text = Path(pubkey).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"can not read {pubkey}: {exc}", param_hint="--pubkey") from exc
        trusted = service.parse_vkey(text, pubkey)
    anchor_text = service.read_anchor(anchor) if anchor else None
    with env.home.db() as db:
        report = service.verify(db, trusted, anchor_text)
    if as_json:
        echo_json(report.as_dict())
    elif report.ok:
        click.echo(verified_line(report.size, report.signed_size, report.checkpoints)
                   + ("; consistent with the anchor" if anchor else ""))
    else:
        click.echo(f"first bad seq {report.first_bad_seq}: {report.reason}", err=True)
    if not report.ok:
        raise SystemExit(1)


def verified_line(size: int, signed: int, checkpoints: int) -> str:
    """``ok: verified 51 entries; 50 are covered by 1 signed checkpoint, the newest 1 is not
    signed yet``: what was checked, and how much of it a signature vouches for."""
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    text = f"ok: verified {n(size, 'entry', 'entries')} (hashes and links)"
    if checkpoints == 0:
        return text + "; no signed checkpoint covers them yet ('appliance audit checkpoint')"
    text += (f"; {'all ' if signed == size and size > 1 else ''}{signed} "
             f"{'is' if signed == 1 else 'are'} covered by "
             f"{n(checkpoints, 'signed checkpoint', 'signed checkpoints')}")
    if signed < size:
        text += (f", the newest {size - signed} {'is' if size - signed == 1 else 'are'} "
                 "not signed yet (the next checkpoint signs them)")
    return text


@audit_group.command("checkpoint")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="File to write the signed checkpoint to; keep it off the box.")
@pass_env
def audit_checkpoint(env: Env, out: str) -> None:
    """Sign the log as it stands and write the checkpoint, to keep as an anchor."""
    authorize(env.principal, WRITE)
    with env.home.db() as db:
        note = service.checkpoint(db)
    try:
        Path(out).write_text(note, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"--out {out}: can not be written: {exc.strerror or exc}") from exc
    click.echo(f"wrote {out}")


@audit_group.command("export")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="New or empty directory for the bundle.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@pass_env
def audit_export(env: Env, out: str, as_json: bool) -> None:
    """Write entries, checkpoints, proofs and the public key for an auditor."""
    authorize(env.principal, WRITE)
    with env.home.db() as db:
        manifest = export(db, Path(out))
    if as_json:
        echo_json(manifest)
    else:
        click.echo(f"exported {manifest['size']} entries and {manifest['checkpoints']} "
                   f"checkpoints to {out}; check with standalone_verify.py --pubkey KEY {out}")


@audit_group.command("rotate-key")
@pass_env
def audit_rotate_key(env: Env) -> None:
    """Replace the signing key; the old key signs the entry that introduces the new one."""
    authorize(env.principal, WRITE)
    info = service.rotate_key(env.home, env.actor)
    click.echo(f"new audit key: {info.vkey} (public key in {info.public_path})")


COMMANDS = [audit_group]
