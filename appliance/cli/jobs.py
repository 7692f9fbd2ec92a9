"""``appliance jobs ...`` and the ``appliance worker`` daemon."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import BadInput, OperationFailed
from appliance.gpu.placement import ResourceRequest
from appliance.jobs import KINDS
from appliance.queue import jobs as svc
from appliance.queue.states import JobState


def parse_params(pairs: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    """``--params '{...}'`` then ``--param key=value`` (value read as JSON when it parses)."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise BadInput(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise BadInput("--params must be a JSON object")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def spec_options(fn: Any) -> Any:
    """The options that describe a job, shared by ``jobs submit`` and ``schedules add``."""
    for option in reversed([
        click.argument("kind"),
        click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
                     help="A job parameter; VALUE is read as JSON when it parses. Repeatable."),
        click.option("--params", "params_json", metavar="JSON",
                     help="All parameters as one JSON object (--param entries override it)."),
        click.option("--priority", type=int, default=0, show_default=True,
                     help="Higher runs first; from -1000 to 1000."),
        click.option("--gpus", type=int, default=0, show_default=True,
                     help="GPUs the job needs."),
        click.option("--gpu-memory", "gpu_memory_mb", type=int, default=0, metavar="MIB",
                     help="GPU memory per GPU in MiB; 0 asks for whole GPUs."),
        click.option("--cpus", type=int, default=1, show_default=True, help="CPUs the job needs."),
        click.option("--timeout", "timeout_s", type=float, default=None, metavar="SECONDS",
                     help="Wall-clock limit per attempt (default: queue.timeout_s)."),
        click.option("--max-attempts", type=int, default=None,
                     help="Starts allowed before a lost worker fails it (default: queue.max_attempts)."),
    ]):
        fn = option(fn)
    return fn


def build_spec(kind: str, pairs: tuple[str, ...], params_json: str | None, priority: int,
               gpus: int, gpu_memory_mb: int, cpus: int, timeout_s: float | None,
               max_attempts: int | None) -> svc.JobSpec:
    return svc.JobSpec(
        kind=kind, params=parse_params(pairs, params_json), priority=priority,
        max_attempts=max_attempts, timeout_s=timeout_s,
        request=ResourceRequest(gpus=gpus, gpu_memory_mb=gpu_memory_mb, cpus=cpus),
    )


@click.group("jobs")
def jobs_group() -> None:
    """Submit, inspect and cancel queued jobs."""


@jobs_group.command("submit")
@spec_options
@click.option("--wait", is_flag=True, help="Wait for the job to finish; exit 1 unless it succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_env
def submit(env: Env, kind: str, pairs: tuple[str, ...], params_json: str | None, priority: int,
           gpus: int, gpu_memory_mb: int, cpus: int, timeout_s: float | None,
           max_attempts: int | None, wait: bool, as_json: bool) -> None:
    """Queue a job of KIND (noop, sleep, fail, echo, train, ...); print its id."""
    spec = build_spec(kind, pairs, params_json, priority, gpus, gpu_memory_mb, cpus, timeout_s,
                      max_attempts)
    with env.home.db() as db:
        job_id = svc.submit(db, spec, env.config, kinds=KINDS, actor=env.actor)
        job = svc.get_job(db, job_id)
        while wait and not job.state.terminal:
            time.sleep(0.2)
            job = svc.get_job(db, job_id)
    if as_json:
        echo_json(job.as_dict())
    else:
        click.echo(f"job {job.id} {job.state.value}")
    if wait and job.state is not JobState.SUCCEEDED:
        raise OperationFailed(f"job {job.id} {job.state.value}: {job.error}")


EPOCH_FIELDS = ("heartbeat_at", "lease_expires")  # stored as seconds since the epoch


def _when(epoch: float, now: float) -> str:
    """``2026-12-02T01:14:05+00:00 (3 s ago)``: a time a person reads, with how far off it is."""
    stamp = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    delta = round(now - epoch)
    return f"{stamp} ({delta} s ago)" if delta >= 0 else f"{stamp} (in {-delta} s)"


def _row(job: svc.Job) -> str:
    note = job.wait_reason or job.error or ""
    if job.state is JobState.RUNNING and job.progress:
        note = f"{job.progress.get('fraction', 0):.0%} {job.progress.get('message', '')}"
    return (f"{job.id:>6}  {job.state.value:<9}  {job.kind:<12}  {job.priority:>4}  "
            f"{job.attempts}/{job.max_attempts:<3}  {job.submitted_at[:19]}  {note}")


@jobs_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState]),
              help="Only jobs in this state.")
@click.option("--kind", help="Only jobs of this kind.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs and queue depth as JSON.")
@pass_env
def list_cmd(env: Env, state: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first, with why queued jobs are waiting."""
    with env.home.db() as db:
        found = svc.list_jobs(db, state=state, kind=kind, limit=limit)
        depth = svc.queue_depth(db)
    if as_json:
        echo_json({"jobs": [j.as_dict() for j in found], "depth": depth})
        return
    click.echo("    ID  STATE      KIND           PRI  TRIES  SUBMITTED            NOTE")
    for job in found:
        click.echo(_row(job))
    click.echo(", ".join(f"{n} {s}" for s, n in depth["states"].items()))


@jobs_group.command("show")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@pass_env
def show(env: Env, job_id: int, as_json: bool) -> None:
    """Show one job: state, attempts, resources, lease, result or error."""
    with env.home.db() as db:
        job = svc.get_job(db, job_id)
    data = job.as_dict()
    if as_json:
        echo_json(data)
        return
    now = time.time()
    for key, value in data.items():
        if value in (None, [], {}):
            continue
        if key in EPOCH_FIELDS and isinstance(value, (int, float)):
            value = _when(float(value), now)
        click.echo(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    click.echo(f"log: {env.home.job_dir(job_id) / svc.LOG_FILE}")


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
@pass_env
def cancel(env: Env, job_id: int) -> None:
    """Cancel a job: a queued one at once; a running one's process group is stopped by its worker."""
    with env.home.db() as db:
        job = svc.cancel_job(db, job_id, actor=env.actor)
    if job.state is JobState.CANCELLED:
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id} is being stopped by {job.lease_owner}")


@jobs_group.command("logs")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--tail", "lines", type=int, default=0, help="Only the last N lines (0: all).")
@pass_env
def logs(env: Env, job_id: int, follow: bool, lines: int) -> None:
    """Print a job's log (every attempt's output, each under a header line)."""
    with env.home.db() as db:
        svc.get_job(db, job_id)
        text, offset = svc.read_log(env.home, job_id)
        if lines > 0:
            text = "".join(text.splitlines(keepends=True)[-lines:])
        click.echo(text, nl=False)
        while follow:
            done = svc.get_job(db, job_id).state.terminal
            text, offset = svc.read_log(env.home, job_id, offset)
            click.echo(text, nl=False)
            if done:
                break
            time.sleep(0.2)


@click.command("worker")
@click.option("--max-jobs", type=int, default=None,
              help="Jobs to run at once (default: worker.max_jobs).")
@pass_env
def worker(env: Env, max_jobs: int | None) -> None:
    """Run the worker daemon: claim queued jobs and run each in its own process group.

    On SIGTERM it stops claiming, lets running jobs finish for worker.shutdown_grace_s,
    then stops them and hands them back to the queue.
    """
    from appliance.cli._daemon import StopFlag, setup_logging  # logging: only the daemon

    setup_logging(env.config)
    from appliance.worker.daemon import Worker, WorkerSettings  # only the daemon needs it

    settings = WorkerSettings.from_config(env.config)
    if max_jobs is not None:
        if max_jobs < 1:
            raise BadInput("--max-jobs must be >= 1")
        settings = dataclasses.replace(settings, max_jobs=max_jobs)
    stop = StopFlag().install()
    Worker(env.home, env.config, settings=settings).run(stop)


COMMANDS = [jobs_group, worker]
