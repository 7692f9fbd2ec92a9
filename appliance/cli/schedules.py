"""``appliance schedules ...`` and the ``appliance scheduler`` daemon."""

from __future__ import annotations

import time

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli.jobs import build_spec, spec_options
from appliance.scheduler import schedules as svc


@click.group("schedules")
def schedules_group() -> None:
    """Cron schedules that queue jobs (retraining, drift checks, checkpoints)."""


@schedules_group.command("add")
@click.argument("name")
@click.option("--cron", required=True, metavar="EXPR",
              help="Cron expression: 'minute hour day month weekday', or six fields with seconds first.")
@click.option("--timezone", "tz", default="UTC", show_default=True,
              help="Time zone the cron expression is read in.")
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
@pass_env
def add(env: Env, name: str, cron: str, tz: str, kind: str, pairs: tuple[str, ...],
        params_json: str | None, priority: int, gpus: int, gpu_memory_mb: int, cpus: int,
        timeout_s: float | None, max_attempts: int | None, as_json: bool) -> None:
    """Add schedule NAME that queues a KIND job at each cron time."""
    spec = build_spec(kind, pairs, params_json, priority, gpus, gpu_memory_mb, cpus, timeout_s,
                      max_attempts)
    with env.home.db() as db:
        schedule = svc.add_schedule(db, env.config, name=name, cron=cron, spec=spec,
                                    actor=env.actor, timezone_name=tz)
    if as_json:
        echo_json(schedule.as_dict())
    else:
        click.echo(f"schedule {name} added; next run {schedule.as_dict()['next_fire_at']}")


@schedules_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
@pass_env
def list_cmd(env: Env, as_json: bool) -> None:
    """List schedules with their next and last runs."""
    with env.home.db() as db:
        found = [s.as_dict() for s in svc.list_schedules(db)]
    if as_json:
        echo_json(found)
        return
    for s in found:
        state = "active" if s["enabled"] else "paused"
        click.echo(f"{s['name']}  {state}  '{s['cron']}' {s['timezone']}  "
                   f"{s['template']['kind']}  next {s['next_fire_at'] or '-'}  "
                   f"last {s['last_fired_at'] or '-'} (job {s['last_job_id'] or '-'})")


@schedules_group.command("remove")
@click.argument("name")
@pass_env
def remove(env: Env, name: str) -> None:
    """Remove schedule NAME; jobs it already queued are kept."""
    with env.home.db() as db:
        svc.remove_schedule(db, name, actor=env.actor)
    click.echo(f"schedule {name} removed")


@schedules_group.command("pause")
@click.argument("name")
@pass_env
def pause(env: Env, name: str) -> None:
    """Pause schedule NAME: it queues nothing until resumed."""
    with env.home.db() as db:
        svc.set_enabled(db, name, False, actor=env.actor)
    click.echo(f"schedule {name} paused")


@schedules_group.command("resume")
@click.argument("name")
@pass_env
def resume(env: Env, name: str) -> None:
    """Resume schedule NAME from now on; runs missed while paused are skipped."""
    with env.home.db() as db:
        schedule = svc.set_enabled(db, name, True, actor=env.actor)
    click.echo(f"schedule {name} resumed; next run {schedule.as_dict()['next_fire_at']}")


@click.command("scheduler")
@pass_env
def scheduler(env: Env) -> None:
    """Run the scheduler daemon (only one may run): queue each schedule's jobs on time.

    Exits 1 when another scheduler holds the lock, or when the lock is lost.
    """
    from appliance.cli._daemon import StopFlag, setup_logging  # logging: only the daemon
    from appliance.system import sdnotify

    setup_logging(env.config)
    stop = StopFlag().install()
    from appliance.scheduler.daemon import SchedulerDaemon  # APScheduler: only the daemon

    daemon = SchedulerDaemon(env.home, env.config)
    try:
        daemon.start()
        sdnotify.notify("READY=1", "STATUS=scheduler holds the lock")
        watchdog = sdnotify.watchdog_interval()
        next_ping = 0.0
        while not stop() and not daemon.lost_lock:
            if watchdog is not None and time.monotonic() >= next_ping:
                sdnotify.notify("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog
            time.sleep(0.2)
    finally:
        sdnotify.notify("STOPPING=1")
        daemon.stop()
    if daemon.lost_lock:
        raise SystemExit(1)


COMMANDS = [schedules_group, scheduler]
