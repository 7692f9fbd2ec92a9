"""Drift: ``drift check`` compares any two CSV files."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.datasets.table import parse_csv, read_csv
from appliance.drift import MODES, DriftOptions, Reference, check
from appliance.drift.render import render_html, render_text
from appliance.errors import BadInput


@click.group("drift")
def drift_group() -> None:
    """Data and prediction drift between a reference and current data."""


@drift_group.command("check")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("current", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report with a plot per column to this file.")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="'default' (significance and effect size together) or 'evidently' "
                   "(Evidently's default tests and thresholds); default: drift.mode.")
@click.option("--target", default=None,
              help="Column holding the model's prediction or target; scored as prediction drift "
                   "and left out of the dataset share.")
@pass_env
def drift_check(env: Env, reference: str, current: str, as_json: bool, html_out: str | None,
                mode: str | None, target: str | None) -> None:
    """Compare CURRENT.csv with REFERENCE.csv column by column.

    Column types come from the reference file; the current file must have the
    same columns. Exits 0 when no drift is found, 1 when the dataset (or the
    --target column) drifted, 2 on bad input.
    """
    options = DriftOptions.from_config(env.config, mode=mode)
    infer_rows = env.config["datasets.infer_rows"]
    ref_table = read_csv(Path(reference), infer_rows=infer_rows)
    cur_path = Path(current)
    try:
        data = cur_path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput(f"{cur_path}: no such file") from exc
    except OSError as exc:
        raise BadInput(f"{cur_path}: can not be read: {exc.strerror}") from exc
    cur_table = parse_csv(data, source=str(cur_path), types=ref_table.types)
    if target is not None and target not in ref_table.types:
        raise BadInput(f"--target '{target}' is not a column of {reference}")
    report = check(Reference.from_table(ref_table), cur_table.columns, options,
                   prediction=target)
    if html_out:
        try:
            Path(html_out).write_text(
                render_html(report, title=f"Drift: {cur_path.name} against {Path(reference).name}"),
                encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{html_out}: can not be written: {exc.strerror}") from exc
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(render_text(report))
    if report.drift_found:
        raise SystemExit(1)


# The group is published by appliance.cli.monitoring, which adds its 'report' command.
COMMANDS: list[click.Command] = []
