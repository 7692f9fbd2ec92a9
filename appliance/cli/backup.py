"""``appliance backup`` and ``appliance restore``."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.backup import backup as run_backup
from appliance.backup import restore as run_restore
from appliance.cli._common import Env, echo_json, pass_env


@click.command("backup")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Backup file to write (must not exist yet).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_env
def backup_cmd(env: Env, out: Path, as_json: bool) -> None:
    """Write a consistent online backup: database snapshots, blobs, keys and a hash manifest.

    The audit log's signed checkpoint is taken first and also written beside the backup as
    FILE.checkpoint, to keep apart from it as an anchor.
    """
    report = run_backup(env.home, out, progress=None if as_json else click.echo)
    if as_json:
        echo_json({"path": str(report.path), "files": report.files, "bytes": report.bytes,
                   "manifest_sha256": report.manifest_sha256,
                   "checkpoint": str(report.checkpoint) if report.checkpoint else None})


@click.command("restore")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@pass_env
def restore_cmd(env: Env, archive: Path) -> None:
    """Restore a backup into an empty data directory, verifying every file first."""
    run_restore(archive, env.home, progress=click.echo)


COMMANDS = [backup_cmd, restore_cmd]
