"""Executors: where a claimed job's code actually runs.

The worker owns the queue (claims, leases, transitions); an executor only
starts an attempt and reports on it. ``LocalProcessExecutor`` runs each
attempt as a child process in its own process group on this server. A second
implementation for sites that outgrow one server, ``RayExecutor`` in
``appliance.worker.ray_jobs``, submits the same child to a Ray cluster and
answers ``poll``/``terminate``/``kill`` for the remote job; nothing in the
worker depends on the attempt being a local process.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from appliance.config import Config
from appliance.queue.child import ERROR_FILE, RESULT_FILE, SPEC_FILE
from appliance.queue.context import PROGRESS_FILE
from appliance.queue.jobs import LOG_FILE
from appliance.queue.lease import JOB_ENV

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Launch:
    """Everything an executor needs to run one attempt."""

    job_id: int
    kind: str
    handler: str
    params: dict[str, Any]
    attempt: int
    gpus: tuple[int, ...]
    jobdir: Path
    home: Path
    worker: str
    config: Config
    cpus: int = 1  # the job's resource request, for executors that schedule elsewhere
    num_gpus: int = 0


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: its result, or an error and whether it stopped on request."""

    ok: bool
    result: Any = None
    error: str | None = None
    stopped: bool = False


class JobHandle(Protocol):
    """One running attempt."""

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> Outcome | None:
        """The outcome once the attempt ended, else None. Never blocks."""

    def terminate(self) -> None:
        """Ask the whole attempt to stop (SIGTERM to its process group)."""

    def kill(self) -> None:
        """Stop the whole attempt now (SIGKILL to its process group)."""

    def progress(self) -> dict[str, Any] | None:
        """The latest progress the handler reported, if any."""


class Executor(Protocol):
    def start(self, launch: Launch) -> JobHandle: ...

    def check(self) -> None:
        """Before the first claim: raise an ``ApplianceError`` saying what to fix when
        this executor can not run jobs."""


def write_spec(launch: Launch, *, home: str | None = None,
               gpus: list[int] | None = None) -> None:
    """Write ``JOBDIR/job.json`` for ``appliance.queue.child``: the job and the worker's
    configuration. ``home`` is the data directory and ``gpus`` the GPU indices as the child
    will see them (by default, those of this server)."""
    spec = {
        "job_id": launch.job_id, "kind": launch.kind, "handler": launch.handler,
        "params": launch.params, "attempt": launch.attempt,
        "gpus": list(launch.gpus) if gpus is None else gpus,
        "home": home or str(launch.home), "config": launch.config.to_json(),
    }
    tmp = launch.jobdir / (SPEC_FILE + ".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, launch.jobdir / SPEC_FILE)


def read_progress(jobdir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((jobdir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the worker dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return


class LocalProcess:
    def __init__(self, proc: subprocess.Popen[bytes], jobdir: Path) -> None:
        self._proc = proc
        self._jobdir = jobdir
        self._outcome: Outcome | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return

    def terminate(self) -> None:
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def progress(self) -> dict[str, Any] | None:
        return read_progress(self._jobdir)

    def poll(self) -> Outcome | None:
        if self._outcome is not None:
            return self._outcome
        code = self._proc.poll()
        if code is None:
            return None
        # Whatever the job left running in its group goes with it.
        self._signal_group(signal.SIGKILL)
        self._outcome = self._read(code)
        return self._outcome

    def _read(self, code: int) -> Outcome:
        if code == 0:
            try:
                return Outcome(ok=True, result=json.loads((self._jobdir / RESULT_FILE).read_text()))
            except (OSError, ValueError) as exc:
                return Outcome(ok=False, error=f"the job exited 0 but left no result: {exc}")
        try:
            err = json.loads((self._jobdir / ERROR_FILE).read_text())
            return Outcome(ok=False, error=str(err.get("error")), stopped=bool(err.get("cancelled")))
        except (OSError, ValueError):
            pass
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name; the worker must not crash
                name = str(-code)
            return Outcome(ok=False, error=f"killed by signal {name}", stopped=True)
        return Outcome(ok=False, error=f"exited with status {code}")


class LocalProcessExecutor:
    """Each attempt is ``python -m appliance.queue.child JOBDIR`` in a new process group."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def check(self) -> None:
        return None  # this server runs the jobs; nothing to prove

    def start(self, launch: Launch) -> JobHandle:
        jobdir = launch.jobdir
        (jobdir / "work").mkdir(parents=True, exist_ok=True)
        for name in (RESULT_FILE, ERROR_FILE, PROGRESS_FILE):
            (jobdir / name).unlink(missing_ok=True)
        write_spec(launch)
        env = dict(os.environ)
        env[JOB_ENV] = str(launch.job_id)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in launch.gpus)
        env["PYTHONUNBUFFERED"] = "1"
        with open(jobdir / LOG_FILE, "ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            gpus = ",".join(map(str, launch.gpus)) or "none"
            log.write(
                f"=== job {launch.job_id} ({launch.kind}) attempt {launch.attempt} started "
                f"{stamp} by {launch.worker}, GPUs {gpus} ===\n".encode()
            )
            log.flush()
            proc = subprocess.Popen(
                [self.python, "-m", "appliance.queue.child", str(jobdir)],
                cwd=jobdir / "work",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - the worker is single-threaded
            )
        return LocalProcess(proc, jobdir)
