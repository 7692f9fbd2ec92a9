"""The ``eval-run`` job kind: run an evaluation set against a target and store the run
(``appliance.evals``).

Parameters: ``target`` (``NAME@VERSION`` or ``NAME@ALIAS`` of a language model),
``evalset`` (``NAME`` or ``NAME@VERSION``), and optionally ``judge`` (the model that
judge cases naming none ask) and ``params`` (``max_tokens``, ``temperature``, ``seed``
for every case; a case's own win).
"""

from __future__ import annotations

from typing import Any

from appliance.errors import BadInput
from appliance.evals.cases import check_params
from appliance.evals.results import get_run
from appliance.evals.run import evaluate
from appliance.evals.targets import check_target
from appliance.queue.context import JobCancelled, JobContext
from appliance.registry.refs import parse_ref
from appliance.storage.home import Home

PARAMS = ("target", "evalset", "judge", "params")


def validate_eval_params(params: dict[str, Any]) -> None:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise BadInput(f"eval-run: unknown parameter '{unknown[0]}' ({', '.join(PARAMS)})")
    for key in ("target", "evalset"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise BadInput(f"eval-run: parameter '{key}' is required")
    check_target(params["target"])
    parse_ref(params["evalset"], "evaluation set")
    if params.get("judge") is not None:
        if not isinstance(params["judge"], str):
            raise BadInput("eval-run: parameter 'judge' must be NAME@VERSION or NAME@ALIAS")
        check_target(params["judge"], prompts=False)
    check_params(params.get("params", {}), "params")


def run_eval_job(ctx: JobContext) -> dict[str, Any]:
    validate_eval_params(ctx.params)
    home = Home.from_config(ctx.home, ctx.config)

    def progress(fraction: float, message: str) -> None:
        if ctx.cancelled:
            raise JobCancelled(f"stopped while evaluating {ctx.params['target']}")
        ctx.progress(fraction, message)

    run_id = evaluate(home, ctx.config, ctx.params["target"], ctx.params["evalset"],
                      judge=ctx.params.get("judge"), params=ctx.params.get("params"),
                      actor=f"job:{ctx.job_id}", job_id=ctx.job_id, progress=progress)
    with home.db() as db:
        run = get_run(db, run_id, cases=False)
    summary = run["summary"]
    ctx.log(f"stored evaluation run {run_id}: {summary['passed']}/{summary['cases']} cases "
            f"passed every scorer")
    return {"run_id": run_id, "evalset": run["evalset"], "model": run["model"],
            "cases": summary["cases"], "passed": summary["passed"],
            "scorers": {k: v["mean"] for k, v in summary["scorers"].items()}}
