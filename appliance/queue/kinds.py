"""Job kinds: a name, the handler that runs it, and an optional parameter check.

The queue only stores and hands out jobs by kind name. Which kinds exist is
``appliance.jobs.KINDS``, one table above the services the handlers combine;
the queue's functions take that table as ``kinds=``, so the queue never
reaches up to find it.

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
- ``ctx.config`` is the configuration the worker was started with (its
  ``--config`` file, parsed once); a handler never reads the file again.
- Raising fails the job with the exception's message; the traceback goes to
  the log. A failed job is not retried: retries are for lost workers.
- ``validate`` (optional), named the same way, runs in the submitting process
  with the parameters dict and raises ``BadInput`` naming the bad field, so
  a bad request is refused at submit time rather than failing later.

Adding a kind is one line in ``appliance.jobs.KINDS``. A kind whose module is
absent from this installation is refused at submit time with a clear message.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadInput


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: str  # "package.module:function"
    help: str
    validate: str | None = None


Kinds = Mapping[str, JobKind]


def get_kind(kinds: Kinds, name: str) -> JobKind:
    kind = kinds.get(name)
    if kind is None:
        raise BadInput(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(kinds))}")
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


def check_submittable(kinds: Kinds, name: str, params: dict[str, Any]) -> JobKind:
    """Refuse an unknown or unavailable kind, or parameters its validator rejects."""
    kind = get_kind(kinds, name)
    if not available(kind):
        raise BadInput(
            f"job kind {name!r} is not available on this installation "
            f"({kind.handler.partition(':')[0]} is not installed)"
        )
    if kind.validate:
        load(kind.validate)(params)
    return kind
