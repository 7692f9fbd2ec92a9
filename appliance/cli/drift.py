"""Drift: ``drift check`` compares any two CSV files; ``drift report`` checks a served model."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli.monitoring import window_of
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


def _check_writable(path: Path) -> None:
    """Refuse a report path that can not be written before anything is recorded."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise BadInput(f"{path} is a directory; give a file name for the HTML report")
    if not parent.is_dir():
        raise BadInput(f"{path}: can not be written: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or path.exists() and not os.access(path, os.W_OK):
        raise BadInput(f"{path}: can not be written: permission denied")


@drift_group.command("report")
@click.argument("name")
@click.option("--window", "minutes", type=float, default=None,
              help="Look at the last MINUTES of traffic (default: monitoring.window_minutes).")
@click.option("--since", default=None, help="Look at traffic since this ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole check as JSON.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report to this file.")
@click.option("--mode", type=click.Choice(MODES), default=None,
              help="Drift mode for this report; default: drift.mode.")
@click.option("--no-record", is_flag=True,
              help="Do not store the result, raise alerts or trigger retraining.")
@pass_env
def drift_report(env: Env, name: str, minutes: float | None, since: str | None, as_json: bool,
                 html_out: str | None, mode: str | None, no_record: bool) -> None:
    """Drift, quality, performance and concept drift of served model NAME over a window.

    Compares the sampled inputs and predictions with the version's reference
    profile. Exits 1 when a breach was found, 0 otherwise.
    """
    from appliance.jobs.drift import check_model
    from appliance.monitoring.render import render_html as check_html
    from appliance.monitoring.render import render_text as check_text

    if html_out:
        _check_writable(Path(html_out))
    result = check_model(env.home, name, window=window_of(env, minutes, since),
                         config=env.config, options=DriftOptions.from_config(env.config, mode=mode),
                         actor=env.actor, record=not no_record)
    if html_out:
        try:
            Path(html_out).write_text(check_html(result), encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{html_out}: can not be written: {exc.strerror}") from exc
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(check_text(result))
    if result.breaches:
        raise SystemExit(1)


COMMANDS = [drift_group]
