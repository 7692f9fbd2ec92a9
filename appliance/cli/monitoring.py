"""Monitoring: ``feedback add``, ``drift report``, ``alerts`` and retraining policies."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli.drift import drift_group
from appliance.drift import MODES, DriftOptions
from appliance.errors import BadInput
from appliance.jobs import KINDS
from appliance.jobs.drift import check_model, trigger_retraining
from appliance.monitoring import (
    Window,
    acknowledge,
    add_feedback,
    get_policy,
    list_alerts,
    render_html,
    render_text,
    run_retention,
    set_policy,
    traffic,
)


def _window(env: Env, minutes: float | None, since: str | None) -> Window:
    if minutes is not None and since is not None:
        raise BadInput("give --window or --since, not both")
    if since is not None:
        return Window.since(since)
    return Window.last(minutes if minutes is not None else env.config["monitoring.window_minutes"])


@click.group("feedback")
def feedback_group() -> None:
    """Delayed labels (ground truth) for served predictions."""


@feedback_group.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--strict", is_flag=True,
              help="Fail the whole file when a request id is unknown, instead of skipping it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_env
def feedback_add(env: Env, name: str, file: str, strict: bool, as_json: bool) -> None:
    """Join the labels of FILE.csv (columns request_id, label[, row]) to NAME's predictions.

    A malformed line fails the file and nothing is stored; unknown request ids
    are skipped and counted (or fail the file with --strict).
    """
    result = add_feedback(env.home, name, file, actor=env.actor, strict=strict)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(f"{result.stored} label(s) stored for {result.model} ({result.replaced} "
               f"replaced); {result.unknown} unknown request id(s) rejected"
               + (f" (first: {', '.join(result.unknown_examples)})" if result.unknown else "")
               + (f"; {result.unsampled} without a sampled prediction" if result.unsampled
                  else ""))


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
    if html_out:
        _check_writable(Path(html_out))
    check = check_model(env.home, name, window=_window(env, minutes, since), config=env.config,
                      options=DriftOptions.from_config(env.config, mode=mode), actor=env.actor,
                      record=not no_record)
    if html_out:
        try:
            Path(html_out).write_text(render_html(check), encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{html_out}: can not be written: {exc.strerror}") from exc
    if as_json:
        echo_json(check.as_dict())
    else:
        click.echo(render_text(check))
    if check.breaches:
        raise SystemExit(1)


@click.group("alerts", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@click.option("--model", default=None, help="Only this model's alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.pass_context
def alerts_group(ctx: click.Context, show_all: bool, model: str | None, as_json: bool) -> None:
    """List open and acknowledged alerts (newest first); see 'alerts ack'."""
    if ctx.invoked_subcommand is not None:
        return
    env: Env = ctx.find_object(Env)
    with env.home.db() as db:
        found = [a.as_dict() for a in list_alerts(db, include_closed=show_all, model=model)]
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no alerts")
    for a in found:
        job = f" retrain job {a['retrain_job_id']}" if a["retrain_job_id"] else ""
        click.echo(f"{a['id']}  {a['state']:<12} {a['severity']:<8} {a['model']}@{a['version']} "
                   f"{a['kind']}  x{a['count']} last {a['last_seen']}{job}\n    {a['message']}")


@alerts_group.command("ack")
@click.argument("alert_id", type=int)
@pass_env
def alerts_ack(env: Env, alert_id: int) -> None:
    """Acknowledge alert ALERT_ID; it stays live until its condition clears."""
    with env.home.db() as db:
        alert = acknowledge(db, alert_id, actor=env.actor)
    click.echo(f"alert {alert.id} acknowledged")


@click.group("monitoring")
def monitoring_group() -> None:
    """Traffic of served models and their retraining policies."""


@monitoring_group.command("traffic")
@click.argument("name")
@click.option("--window", "minutes", type=float, default=None,
              help="Last MINUTES of traffic (default: monitoring.window_minutes).")
@click.option("--since", default=None, help="Traffic since this ISO 8601 time.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@pass_env
def monitoring_traffic(env: Env, name: str, minutes: float | None, since: str | None,
                       as_json: bool) -> None:
    """Requests, errors and latency percentiles of NAME per version and minute."""
    with env.home.monitoring_db() as mon:
        rows = traffic(mon, name, _window(env, minutes, since))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['minute']} v{r['version']} {r['route']:<6} {r['requests']:>6} req "
                   f"{r['failures']:>4} failed  p50 {r['p50_ms'] or 0:.1f} p95 "
                   f"{r['p95_ms'] or 0:.1f} p99 {r['p99_ms'] or 0:.1f} ms")


@monitoring_group.command("retention")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_env
def monitoring_retention(env: Env, as_json: bool) -> None:
    """Roll the request log up into per-minute aggregates and prune it now.

    Raw rows past monitoring.retention_days are deleted once rolled up; kept inputs and
    outputs past monitoring.input_retention_days are emptied. The scheduler does the same
    every monitoring.retention_interval_minutes.
    """
    with env.home.monitoring_db() as mon:
        report = run_retention(mon, env.config)
    if as_json:
        echo_json(report.as_dict())
        return
    click.echo(f"rolled up {report.rolled_rows} request rows into {report.minutes_written} "
               f"minute aggregate(s); deleted {report.deleted_rows} rows past "
               f"{env.config['monitoring.retention_days']:g} days; emptied the inputs of "
               f"{report.emptied_inputs} rows past "
               f"{env.config['monitoring.input_retention_days']:g} days "
               f"({report.seconds:.1f} s)")


@monitoring_group.command("policy")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the policy as JSON.")
@pass_env
def monitoring_policy(env: Env, name: str, file: str | None, as_json: bool) -> None:
    """Set NAME's retraining policy from FILE.yaml, or show it when FILE is left out."""
    with env.home.db() as db:
        if file is None:
            policy = get_policy(db, name)
        else:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInput(f"{file}: can not be read: {exc.strerror}") from exc
            policy = set_policy(db, name, text, actor=env.actor)
    if as_json:
        echo_json(policy)
    else:
        for key, value in policy.items():
            click.echo(f"{key}: {value}")


@monitoring_group.command("retrain")
@click.argument("name", required=False)
@pass_env
def monitoring_retrain(env: Env, name: str | None) -> None:
    """Queue retrain jobs for open alerts now, as the models' retraining policies say."""
    started = trigger_retraining(env.home, env.config, kinds=KINDS, model=name, actor=env.actor)
    for t in started:
        click.echo(f"alert {t.alert_id} ({t.model} {t.kind}): retrain job {t.job_id} queued")
    if not started:
        click.echo("no retrain job queued (no open alert that a policy turns into one)")


# 'drift' is listed here too: its 'report' command is defined in this module, so the
# group must be loaded from here for 'appliance drift report' to exist.
COMMANDS = [feedback_group, alerts_group, monitoring_group, drift_group]
