"""The process a job runs in: ``python -m appliance.queue.child JOBDIR``.

The worker writes ``JOBDIR/job.json`` (the job, its handler and the worker's
configuration, parsed once when the worker started) and starts this module in a new process
group, with ``JOBDIR/work`` as its directory and ``JOBDIR/job.log`` as its
output. It imports the kind's handler, calls it with a ``JobContext``, and
leaves ``result.json`` (success) or ``error.json`` (failure) beside the log.
It never opens the queue's database: the worker owns the job's row, which
keeps the executor boundary a plain process (or, later, a Ray task).

Exit status: 0 succeeded, 1 failed, 3 stopped on request.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType

from appliance.config import Config
from appliance.queue.context import JobCancelled, JobContext

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
SPEC_FILE, RESULT_FILE, ERROR_FILE = "job.json", "result.json", "error.json"


def _write(path: Path, value: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def run(jobdir: Path) -> int:
    spec = json.loads((jobdir / SPEC_FILE).read_text())
    ctx = JobContext(
        job_id=int(spec["job_id"]), kind=spec["kind"], params=spec["params"],
        attempt=int(spec["attempt"]), workdir=jobdir / "work", home=Path(spec["home"]),
        config=Config.from_json(spec["config"]), gpus=tuple(spec.get("gpus", ())),
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        ctx.cancel()

    signal.signal(signal.SIGTERM, on_term)
    from appliance.queue.kinds import load

    try:
        result = load(spec["handler"])(ctx)
        text = json.dumps(result)
    except JobCancelled as exc:
        _write(jobdir / ERROR_FILE, {"error": f"stopped: {exc}", "cancelled": True})
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - the job's own code: any failure is the job's result
        traceback.print_exc()
        sys.stdout.flush()
        message = f"{type(exc).__name__}: {exc}"
        _write(jobdir / ERROR_FILE, {"error": message, "cancelled": False})
        return EXIT_FAILED
    _write(jobdir / RESULT_FILE, json.loads(text))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
