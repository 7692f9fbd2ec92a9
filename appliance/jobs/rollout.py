"""The ``rollout-advance`` job kind: one tick of every staged rollout.

Scheduled like any job (``appliance schedules add``), e.g. every minute, so
rollouts advance and roll back with nobody at the keyboard.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import BadInput
from appliance.promotion.rollout import advance_rollouts
from appliance.queue.context import JobContext
from appliance.storage.home import Home


def validate_rollout_params(params: dict[str, Any]) -> None:
    unknown = set(params) - {"model"}
    if unknown:
        raise BadInput(f"rollout-advance: unknown parameter '{sorted(unknown)[0]}' "
                       "(takes only 'model')")
    if "model" in params and not isinstance(params["model"], str):
        raise BadInput("rollout-advance: 'model' must be a model name")


def run_rollout_job(ctx: JobContext) -> dict[str, Any]:
    steps = advance_rollouts(Home.from_config(ctx.home, ctx.config), name=ctx.params.get("model"))
    for step in steps:
        ctx.log(f"rollout {step.rollout_id} {step.model}@{step.candidate}: {step.decision} "
                f"({step.state_before} -> {step.state_after}): {'; '.join(step.reasons)}")
    return {"steps": [s.as_dict() for s in steps]}
