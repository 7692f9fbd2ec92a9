"""Queue a job for a command and, with ``--wait``, follow it to its end."""

from __future__ import annotations

import time
from typing import Any

import click

from appliance.cli._common import Env, echo_json
from appliance.errors import OperationFailed


def submit_and_follow(env: Env, kind: str, params: dict[str, Any], what: str, *,
                      wait: bool, as_json: bool) -> dict[str, Any] | None:
    """Queue a ``kind`` job (asking for a whole GPU where the host has one, so that nothing
    shares it while it measures). Without ``wait``: print the job and return None. With it:
    show its progress on stderr until it ends, and return its result; ``OperationFailed``
    unless it succeeded."""
    from appliance.gpu.placement import ResourceRequest, inventory_source
    from appliance.jobs import KINDS
    from appliance.queue import jobs as svc
    from appliance.queue.states import JobState

    gpus = 1 if inventory_source(env.config["gpu.inventory_file"]).read().gpus else 0
    spec = svc.JobSpec(kind=kind, params=params,
                       request=ResourceRequest(gpus=gpus, gpu_memory_mb=0, cpus=1))
    with env.home.db() as db:
        job_id = svc.submit(db, spec, env.config, kinds=KINDS, actor=env.actor)
        job = svc.get_job(db, job_id)
        if not wait:
            if as_json:
                echo_json(job.as_dict())
            else:
                click.echo(f"job {job.id} {job.state.value}: {what}; "
                           f"'appliance jobs show {job.id}' follows it")
            return None
        if not as_json:
            click.echo(f"job {job.id} queued: {what}", err=True)
        said = ""
        while not job.state.terminal:
            time.sleep(0.2)
            job = svc.get_job(db, job_id)
            progress = job.progress or {}
            message = progress.get("message", "")
            if message and message != said and not as_json:
                click.echo(f"  {progress.get('fraction', 0):4.0%}  {message}", err=True)
                said = message
        if job.state is not JobState.SUCCEEDED:
            raise OperationFailed(f"job {job.id} {job.state.value}: {job.error}")
        return dict(job.result or {})
