"""``appliance datasets add|list|show``."""

from __future__ import annotations

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.datasets import (
    add_dataset,
    get_dataset_version,
    list_datasets,
    list_versions,
    load_profile,
)
from appliance.registry.refs import parse_ref


@click.group("datasets")
def datasets_group() -> None:
    """Register and inspect immutable dataset versions."""


@datasets_group.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--target", default=None, help="The column a model should predict.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def datasets_add(env: Env, name: str, file: str, target: str | None, as_json: bool) -> None:
    """Register FILE (CSV) as the next version of dataset NAME and print NAME@VERSION.

    The same bytes with the same target give back the existing version.
    """
    cfg = env.config
    with env.home.db() as db:
        version, created = add_dataset(
            db, env.home.blobs, name, file, actor=env.actor, target=target,
            max_file_mb=cfg["datasets.max_file_mb"], infer_rows=cfg["datasets.infer_rows"],
            profile_bins=cfg["datasets.profile_bins"], profile_top_k=cfg["datasets.profile_top_k"],
        )
    if as_json:
        echo_json({**version.as_dict(), "created": created})
        return
    click.echo(version.ref)
    if not created:
        click.echo(f"(already registered as {version.ref})", err=True)


@datasets_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the datasets as JSON.")
@pass_env
def datasets_list(env: Env, as_json: bool) -> None:
    """List datasets with their latest version and row count."""
    with env.home.db() as db:
        rows = list_datasets(db)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no datasets; register one with 'appliance datasets add NAME FILE'")
        return
    click.echo(f"{'NAME':<24} {'LATEST':>6} {'VERSIONS':>8} {'ROWS':>10}  CREATED")
    for r in rows:
        click.echo(f"{r['name']:<24} {r['latest'] or '-':>6} {r['versions']:>8} "
                   f"{r['latest_rows'] or 0:>10}  {r['created_at'][:19]}")


@datasets_group.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print the version and its profile as JSON.")
@pass_env
def datasets_show(env: Env, ref: str, as_json: bool) -> None:
    """Show NAME@VERSION (NAME alone: the latest): schema, rows, hash and profile summary."""
    with env.home.db() as db:
        version = get_dataset_version(db, ref)
        versions = list_versions(db, version.name) if parse_ref(ref).version is None else []
    profile = load_profile(env.home.blobs, version)
    if as_json:
        echo_json({**version.as_dict(), "profile": profile,
                   "versions": [v.ref for v in versions]})
        return
    click.echo(f"{version.ref}  sha256:{version.digest}")
    click.echo(f"rows: {version.row_count}  size: {version.size_bytes} bytes  "
               f"target: {version.target or '-'}")
    click.echo(f"registered {version.created_at} by {version.created_by}")
    click.echo(f"{'COLUMN':<24} {'TYPE':<12} {'MISSING':>8}  SUMMARY")
    for column in version.schema:
        stats = profile["columns"][column["name"]]
        if column["type"] == "categorical":
            top = ", ".join(f"{k}={v}" for k, v in list(stats["categories"].items())[:3])
            summary = f"{stats['unique']} categories: {top}"
        elif "min" in stats:
            summary = (f"min {stats['min']:.4g} max {stats['max']:.4g} mean {stats['mean']:.4g} "
                       f"std {stats['std']:.4g}")
        else:
            summary = "no values"
        click.echo(f"{column['name']:<24} {column['type']:<12} "
                   f"{stats['missing_share']:>8.1%}  {summary}")
    if len(versions) > 1:
        click.echo("versions: " + ", ".join(v.ref for v in versions))


COMMANDS = [datasets_group]
