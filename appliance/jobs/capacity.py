"""The ``capacity-profile`` job kind: sweep one model version as serving would load it,
and store the profile with the version (``appliance.capacity``).

Parameters: ``model`` (``NAME@VERSION`` or ``NAME@ALIAS``), and optionally the sweep's
``batch_sizes``, ``concurrency`` (tabular), ``streams``, ``prompt_tokens``,
``answer_tokens`` (language models), ``window_s``, ``stability``, ``max_windows``.
The queue places it like any job: ``appliance capacity profile`` asks for a whole GPU
where the server has one, so that nothing else runs on it while it is measured.
"""

from __future__ import annotations

from typing import Any

from appliance.capacity import store
from appliance.capacity.profile import Sweep, run_profile
from appliance.errors import BadInput
from appliance.queue.context import JobCancelled, JobContext
from appliance.registry import resolve
from appliance.registry.refs import parse_ref
from appliance.storage.home import Home


def validate_profile_params(params: dict[str, Any]) -> None:
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise BadInput("capacity-profile: parameter 'model' (NAME@VERSION) is required")
    parse_ref(model, "model")
    Sweep.from_params(params)


def run_profile_job(ctx: JobContext) -> dict[str, Any]:
    validate_profile_params(ctx.params)
    home = Home.from_config(ctx.home, ctx.config)
    with home.db() as db:
        mv = resolve(db, ctx.params["model"])
    sweep = Sweep.from_params(ctx.params, ctx.config)

    def progress(fraction: float, message: str) -> None:
        if ctx.cancelled:
            raise JobCancelled(f"stopped while profiling {mv.ref}")
        ctx.progress(fraction, message)

    profile = run_profile(home, ctx.config, mv.name, mv.version, sweep, progress=progress)
    with home.db() as db:
        profile_id = store.save(db, mv.ref, profile, actor=f"job:{ctx.job_id}",
                                job_id=ctx.job_id)
    ctx.log(f"stored capacity profile {profile_id} of {mv.ref}: {len(profile['points'])} "
            f"points on {profile['device']} in {profile['duration_s']} s")
    return {"profile_id": profile_id, "model": mv.name, "version": mv.version,
            "kind": profile["kind"], "device": profile["device"],
            "points": len(profile["points"]),
            "unstable": sum(1 for p in profile["points"] if not p["stable"])}
