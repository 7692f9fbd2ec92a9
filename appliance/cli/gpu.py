"""``appliance gpu``: the GPU inventory and who holds what on each GPU."""

from __future__ import annotations

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.errors import StorageError
from appliance.gpu.placement import MIB, Holdings, free_mb, inventory_source
from appliance.queue.lease import holdings


@click.command("gpu")
@click.option("--json", "as_json", is_flag=True, help="Print the inventory as JSON.")
@pass_env
def gpu(env: Env, as_json: bool) -> None:
    """Print the GPUs (NVML): memory, utilisation, and memory held by jobs and serving."""
    # Against the budget: what jobs and serving hold, the reserve (gpu.reserve_mb) kept
    # from jobs, and what a new job could still be given.
    inventory = inventory_source(env.config["gpu.inventory_file"]).read()
    held = Holdings(reserve_mb=env.config["gpu.reserve_mb"])
    try:
        db = env.home.db()
    except StorageError:
        db = None  # not initialised yet: the hardware alone is still worth showing
    if db is not None:
        try:
            held, _ = holdings(db, env.config["gpu.reserve_mb"])
        finally:
            db.close()
    data = inventory.as_dict()
    for g, d in zip(inventory.gpus, data["gpus"], strict=True):
        d["jobs_mb"] = held.jobs_mb.get(g.index, 0)
        d["serving_mb"] = held.serving_mb.get(g.index, 0)
        d["whole_gpu_job"] = g.index in held.exclusive
        d["reserve_mb"] = env.config["gpu.reserve_mb"]
        d["free_for_jobs_mb"] = 0 if g.index in held.exclusive else free_mb(g, held)
    if as_json:
        echo_json(data)
        return
    if not inventory.gpus:
        click.echo(inventory.reason or "no GPU on this server")
        return
    click.echo(f"driver {inventory.driver}")
    for g, d in zip(inventory.gpus, data["gpus"], strict=True):
        click.echo(
            f"gpu{g.index}  {g.name}  {g.memory_used // MIB}/{g.memory_total // MIB} MiB used  "
            f"{g.utilization}% busy  jobs {d['jobs_mb']} MiB  serving {d['serving_mb']} MiB  "
            f"reserve {d['reserve_mb']} MiB  free for jobs {d['free_for_jobs_mb']} MiB"
            + ("  (a job holds the whole GPU)" if d["whole_gpu_job"] else "")
        )


COMMANDS = [gpu]
