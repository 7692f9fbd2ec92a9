"""Job kinds: a name, the handler that runs it, and an optional parameter check.

The handler contract
--------------------
A handler is a plain function named by a dotted path ``"package.module:function"``.
The worker's child process imports it and calls it with one argument, a
``JobContext`` (``appliance.queue.context``)::

    def run_train_job(ctx: JobContext) -> dict:
        recipe = ctx.params["recipe"]          # the job's JSON parameters
        ctx.log("loading data")                 # a line in <home>/jobs/<id>/job.log
        for epoch in range(n):
            if ctx.cancelled:                   # SIGTERM arrived: stop cleanly
                raise JobCancelled("stopped at epoch %d" % epoch)
            ctx.progress(epoch / n, "epoch %d" % epoch)
        return {"run_id": ...}                  # JSON: becomes the job's result

- It runs in its own process group with ``ctx.workdir`` (``<home>/jobs/<id>/work``)
  as the current directory; the directory survives a retry, so a handler may
  resume from what an earlier attempt left there.
- ``CUDA_VISIBLE_DEVICES`` names the GPUs the queue placed it on (``ctx.gpus``).
- It opens the data directory itself when it needs it (``ctx.home``); a long
  job must not hold a write transaction across its work.
- Raising fails the job with the exception's message; the traceback goes to
  the log. A failed job is not retried: retries are for lost workers.
- ``validate`` (optional), named the same way, runs in the submitting process
  with the parameters dict and raises ``BadInput`` naming the bad field, so
  a bad request is refused at submit time rather than failing later.

Adding a kind is one line in ``KINDS``. A kind whose module is absent from
this installation is refused at submit time with a clear message.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadInput


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: str  # "package.module:function"
    help: str
    validate: str | None = None


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("noop", "appliance.queue.builtin:noop",
                "does nothing and reports where it ran (pid, GPUs, directory)"),
        JobKind("sleep", "appliance.queue.builtin:sleep",
                "sleeps params.seconds (default 1), optionally in params.children "
                "extra processes", "appliance.queue.builtin:validate_sleep"),
        JobKind("fail", "appliance.queue.builtin:fail",
                "fails with params.message, to check alerting and the failure path"),
        JobKind("echo", "appliance.queue.builtin:echo",
                "returns its parameters as its result"),
        JobKind("train", "appliance.training.jobs:run_train_job",
                "trains a model from a recipe", "appliance.training.jobs:validate_train_params"),
        JobKind("retrain", "appliance.training.jobs:run_retrain_job",
                "retrains a registered model on newer data",
                "appliance.training.jobs:validate_retrain_params"),
        JobKind("reproduce", "appliance.training.jobs:run_reproduce_job",
                "re-runs a recorded run and compares the results",
                "appliance.training.jobs:validate_reproduce_params"),
        JobKind("drift-check", "appliance.drift.jobs:run_drift_check_job",
                "computes drift for a served model against its reference",
                "appliance.drift.jobs:validate_drift_check_params"),
        JobKind("rollout-advance", "appliance.promotion.jobs:run_rollout_job",
                "advances or rolls back staged rollouts from the request log",
                "appliance.promotion.jobs:validate_rollout_params"),
    )
}


def get_kind(name: str) -> JobKind:
    kind = KINDS.get(name)
    if kind is None:
        raise BadInput(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(KINDS))}")
    return kind


def available(kind: JobKind) -> bool:
    """True when the kind's handler module is installed here."""
    module = kind.handler.partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def load(path: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise BadInput(f"handler {path!r} is not of the form 'package.module:function'")
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, attr)
    except AttributeError as exc:
        raise BadInput(f"handler {path!r}: {module_name} has no {attr}") from exc
    if not callable(fn):
        raise BadInput(f"handler {path!r} is not callable")
    return fn


def check_submittable(name: str, params: dict[str, Any]) -> JobKind:
    """Refuse an unknown or unavailable kind, or parameters its validator rejects."""
    kind = get_kind(name)
    if not available(kind):
        raise BadInput(
            f"job kind {name!r} is not available on this installation "
            f"({kind.handler.partition(':')[0]} is not installed)"
        )
    if kind.validate:
        load(kind.validate)(params)
    return kind
