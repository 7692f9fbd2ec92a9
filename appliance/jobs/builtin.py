"""Built-in diagnostic job kinds: check the queue, the worker and GPU placement end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from appliance.errors import BadInput, OperationFailed
from appliance.queue.context import JobCancelled, JobContext


def _mark(ctx: JobContext) -> None:
    """Append one line per run to ``params.mark``: lets an operator count runs."""
    mark = ctx.params.get("mark")
    if mark:
        with open(mark, "a", encoding="utf-8") as fh:
            fh.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")


def _where(ctx: JobContext) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "attempt": ctx.attempt,
        "cwd": os.getcwd(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def noop(ctx: JobContext) -> dict[str, Any]:
    _mark(ctx)
    return _where(ctx)


def echo(ctx: JobContext) -> dict[str, Any]:
    _mark(ctx)
    return {"params": ctx.params}


def fail(ctx: JobContext) -> None:
    _mark(ctx)
    raise OperationFailed(str(ctx.params.get("message", "failed on purpose (fail job kind)")))


def validate_sleep(params: dict[str, Any]) -> None:
    seconds = params.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise BadInput("params.seconds must be a number >= 0")
    if not isinstance(params.get("stubborn", False), bool):
        raise BadInput("params.stubborn must be true or false")
    children = params.get("children", 0)
    if isinstance(children, bool) or not isinstance(children, int) or not 0 <= children <= 16:
        raise BadInput("params.children must be an integer from 0 to 16")


def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleep, optionally with child processes that sleep too (they share the process group).

    ``stubborn`` makes the job and its children ignore SIGTERM, as a hung job
    would, so only the process group's SIGKILL stops them.
    """
    validate_sleep(ctx.params)
    _mark(ctx)
    seconds = float(ctx.params.get("seconds", 1))
    stubborn = bool(ctx.params.get("stubborn", False))
    code = "import time; time.sleep(%r)" % (seconds + 60)
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + code
    children = [
        subprocess.Popen([sys.executable, "-c", code])
        for _ in range(int(ctx.params.get("children", 0)))
    ]
    ctx.log(f"sleeping {seconds}s; children {[c.pid for c in children]}")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if ctx.cancelled:
                raise JobCancelled("stopped while sleeping")
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        for child in children:
            child.kill()
            child.wait()
    return {**_where(ctx), "slept": seconds}
