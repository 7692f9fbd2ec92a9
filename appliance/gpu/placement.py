"""Which GPUs a job's request fits on, given what is already held.

Memory on a GPU is held by three parties: jobs the queue already placed there
(their requested memory, whether or not they have allocated it yet), the
serving daemon (what it declares in its heartbeat), and anything else NVML
sees in use. A GPU's free memory for a new job is its total minus the larger
of what NVML measures and what is committed, minus a fixed headroom; so a job
never takes memory that serving holds, even before serving has allocated it.

A request of ``gpu_memory_mb == 0`` asks for whole GPUs: only GPUs that no
job holds fit, and the job then holds all their memory that serving does not.

The two reasons a GPU job waits are kept distinct, because they call for
different actions: "no GPU on this server" (fix the host or the request) and
"GPUs busy" (wait, or free a GPU).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import BadInput
from appliance.gpu.inventory import GPU, Inventory, InventorySource, NvmlSource, StaticSource

MIB = 1024 * 1024
NO_GPU = "no GPU on this server"
BUSY = "GPUs busy"


@dataclass(frozen=True)
class ResourceRequest:
    """What one job asks for: whole CPUs, a number of GPUs, and memory on each GPU."""

    gpus: int = 0
    gpu_memory_mb: int = 0
    cpus: int = 1

    def describe(self) -> str:
        if not self.gpus:
            return f"{self.cpus} CPU(s)"
        mem = "a whole GPU each" if not self.gpu_memory_mb else f"{self.gpu_memory_mb} MiB each"
        return f"{self.gpus} GPU(s), {mem}"


@dataclass(frozen=True)
class Holdings:
    """Memory (MiB) committed per GPU index: by placed jobs, by serving; and whole GPUs."""

    jobs_mb: Mapping[int, int] = field(default_factory=dict)
    serving_mb: Mapping[int, int] = field(default_factory=dict)
    exclusive: frozenset[int] = frozenset()
    reserve_mb: int = 0


@dataclass(frozen=True)
class Placement:
    """Either the GPU indices a job goes to (maybe none, for a CPU job), or why it waits."""

    gpu_indices: tuple[int, ...] = ()
    wait_reason: str | None = None

    @property
    def fits(self) -> bool:
        return self.wait_reason is None


def free_mb(gpu: GPU, holdings: Holdings) -> int:
    """Memory a new job may still take on ``gpu``."""
    committed = holdings.jobs_mb.get(gpu.index, 0) + holdings.serving_mb.get(gpu.index, 0)
    measured = gpu.memory_used // MIB
    return max(0, gpu.memory_total // MIB - max(measured, committed) - holdings.reserve_mb)


def place(inventory: Inventory, request: ResourceRequest, holdings: Holdings) -> Placement:
    """Pick GPUs for ``request``: the ones with the most free memory that fit.

    Taking the emptiest GPUs first spreads jobs out, which leaves the most room
    on every GPU for the next request of unknown size.
    """
    if request.gpus <= 0:
        return Placement()
    if not inventory.gpus:
        detail = inventory.reason or NO_GPU
        if not detail.startswith(NO_GPU):
            detail = f"{NO_GPU} ({detail})"
        return Placement(wait_reason=f"{detail}; the job needs {request.describe()}")
    if request.gpus > len(inventory.gpus):
        return Placement(
            wait_reason=f"the job needs {request.gpus} GPUs and this server has "
            f"{len(inventory.gpus)}; it can not run here until the request is lowered"
        )
    candidates: list[tuple[int, int]] = []
    for gpu in inventory.gpus:
        if gpu.index in holdings.exclusive:
            continue
        free = free_mb(gpu, holdings)
        if request.gpu_memory_mb == 0:
            if holdings.jobs_mb.get(gpu.index, 0) == 0 and free > 0:
                candidates.append((free, gpu.index))
        elif free >= request.gpu_memory_mb:
            candidates.append((free, gpu.index))
    if len(candidates) < request.gpus:
        state = ", ".join(
            f"gpu{g.index} held whole by a job"
            if g.index in holdings.exclusive
            else f"gpu{g.index} {free_mb(g, holdings)} MiB free"
            for g in inventory.gpus
        )
        return Placement(wait_reason=f"{BUSY}: the job needs {request.describe()}; {state}")
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return Placement(gpu_indices=tuple(sorted(i for _, i in candidates[: request.gpus])))


def source_from_file(path: str | Path) -> StaticSource:
    """A simulated inventory from JSON: ``{"gpus": [{"name", "memory_total_mb", ...}]}``.

    Each GPU takes ``name``, ``memory_total_mb`` and optionally ``memory_used_mb``,
    ``utilization`` and ``uuid``; the list order gives the indices.
    """
    p = Path(path)
    try:
        data: Any = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"gpu.inventory_file {p}: can not read it as JSON: {exc}") from exc
    items = data.get("gpus") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise BadInput(f"gpu.inventory_file {p}: expected an object with a 'gpus' list")
    gpus = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("memory_total_mb"), int):
            raise BadInput(f"gpu.inventory_file {p}: gpus[{i}] needs an integer memory_total_mb")
        gpus.append(
            GPU(
                index=i,
                uuid=str(item.get("uuid", f"GPU-simulated-{i}")),
                name=str(item.get("name", "simulated GPU")),
                memory_total=int(item["memory_total_mb"]) * MIB,
                memory_used=int(item.get("memory_used_mb", 0)) * MIB,
                utilization=int(item.get("utilization", 0)),
            )
        )
    return StaticSource(gpus)


def inventory_source(inventory_file: str) -> InventorySource:
    """NVML, unless the configuration names a simulated inventory file."""
    return source_from_file(inventory_file) if inventory_file else NvmlSource()
