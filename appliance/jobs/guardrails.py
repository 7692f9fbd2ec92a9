"""The ``guardrails-train`` job kind: retrain the prompt-injection classifier and promote it
only when its held-out figures meet the goal (``appliance.guardrails.service.retrain``).

Parameters, both optional: ``min_recall`` (0.90) and ``max_false_positive_rate`` (0.02),
the goal on the held-out split. Schedulable like any kind (``appliance schedules add NAME --cron EXPR
guardrails-train``). The benign side takes the site's own prompts too: the cases of its
evaluation sets that are not attacks (``appliance.evals.guard.site_benign``), so a retrain
after ``appliance evals add`` learns the site's traffic. The result names the new version,
whether it was promoted and why.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import BadInput
from appliance.evals.guard import site_benign
from appliance.guardrails import service
from appliance.queue.context import JobContext
from appliance.storage.home import Home

GOAL = {"min_recall": service.GOAL_RECALL, "max_false_positive_rate": service.GOAL_FPR}


def validate_train_params(params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - set(GOAL))
    if unknown:
        raise BadInput(f"guardrails-train: unknown parameter '{unknown[0]}' "
                       f"({', '.join(GOAL)})")
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value <= 1:
            raise BadInput(f"guardrails-train: parameter '{key}' must be a number from 0 "
                           f"to 1, not {value!r}")


def run_guardrails_train_job(ctx: JobContext) -> dict[str, Any]:
    validate_train_params(ctx.params)
    goal = {**GOAL, **ctx.params}
    home = Home.from_config(ctx.home, ctx.config)
    ctx.progress(0.0, "training the prompt-injection classifier")
    with home.db() as db:
        result = service.retrain(ctx.config, db, home.blobs, actor=f"job:{ctx.job_id}",
                                 min_recall=float(goal["min_recall"]),
                                 max_fpr=float(goal["max_false_positive_rate"]),
                                 site=site_benign(db, home.blobs))
    ctx.log(f"registered {result['version']}: {result['why']}")
    return result
