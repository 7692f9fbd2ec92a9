"""Monitoring: ``feedback add``, ``alerts``, traffic and retraining policies."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import BadInput
from appliance.monitoring import Window, run_retention, traffic


def window_of(env: Env, minutes: float | None, since: str | None) -> Window:
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
    from appliance.monitoring.feedback import add_feedback  # numpy: not for the other commands

    result = add_feedback(env.home, name, file, actor=env.actor, strict=strict)
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(f"{result.stored} label(s) stored for {result.model} ({result.replaced} "
               f"replaced); {result.unknown} unknown request id(s) rejected"
               + (f" (first: {', '.join(result.unknown_examples)})" if result.unknown else "")
               + (f"; {result.unsampled} without a sampled prediction" if result.unsampled
                  else ""))


@click.group("alerts", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="Include resolved alerts.")
@click.option("--model", default=None, help="Only this model's alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.pass_context
def alerts_group(ctx: click.Context, show_all: bool, model: str | None, as_json: bool) -> None:
    """List open and acknowledged alerts (newest first); see 'alerts ack'."""
    from appliance.monitoring import list_alerts  # the audit log: not for 'traffic'

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
        from appliance.monitoring import acknowledge

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
        rows = traffic(mon, name, window_of(env, minutes, since))
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

    Raw rows (language-model requests too) past monitoring.retention_days are deleted
    once rolled up; kept inputs and
    outputs past monitoring.input_retention_days are emptied. The scheduler does the same
    every monitoring.retention_interval_minutes.
    """
    with env.home.monitoring_db() as mon:
        report = run_retention(mon, env.config)
    if as_json:
        echo_json(report.as_dict())
        return
    click.echo(f"rolled up {report.rolled_rows} request rows into {report.minutes_written} "
               f"minute aggregate(s) and {report.llm_rolled_rows} language-model request rows "
               f"into {report.llm_minutes_written}; deleted {report.deleted_rows} and "
               f"{report.llm_deleted_rows} rows past "
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
    from appliance.monitoring import get_policy, set_policy

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
    from appliance.jobs import KINDS
    from appliance.jobs.drift import trigger_retraining

    started = trigger_retraining(env.home, env.config, kinds=KINDS, model=name, actor=env.actor)
    for t in started:
        click.echo(f"alert {t.alert_id} ({t.model} {t.kind}): retrain job {t.job_id} queued")
    if not started:
        click.echo("no retrain job queued (no open alert that a policy turns into one)")


COMMANDS = [feedback_group, alerts_group, monitoring_group]
