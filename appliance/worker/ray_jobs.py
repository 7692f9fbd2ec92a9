"""The Ray executor: each attempt becomes a job on a Ray cluster, through Ray's Jobs REST API.

Nothing here imports Ray: the worker speaks HTTP to the head's dashboard
(``POST /api/jobs/``, ``GET /api/jobs/{id}``, ``GET /api/jobs/{id}/logs``,
``POST /api/jobs/{id}/stop``). The job on the cluster is the same child the local
executor starts, ``python -m appliance.queue.child JOBDIR``, so the spec, the
configuration, the result and the progress travel through the data directory,
which every Ray node must mount (at the same path, or at ``worker.ray.home``).
``RayExecutor.check`` proves that at start with a small job on the cluster.

The submission id is derived from the job id and the attempt, and written to
``JOBDIR/ray.json`` before the submission is sent. Ray refuses a second
submission with the same id, so a submit retried after a lost answer attaches
to the job the first one made; and a worker started after a crash finds the
Ray job of the earlier attempt in ``ray.json`` and follows it (while it runs,
or once it succeeded) instead of submitting the work again.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from appliance.config import Config
from appliance.errors import ConfigError, OperationFailed
from appliance.queue.child import ERROR_FILE, RESULT_FILE
from appliance.queue.context import PROGRESS_FILE
from appliance.queue.jobs import LOG_FILE
from appliance.queue.lease import JOB_ENV
from appliance.worker.executor import Launch, Outcome, read_progress, write_spec

log = logging.getLogger("appliance.worker.ray")

STATE_FILE = "ray.json"
CHECK_DIR = "ray-check"
ORPHANS_FILE = "ray-orphans.json"  # in jobs/: Ray jobs to stop once the cluster answers
ACTIVE = ("PENDING", "RUNNING")
LOGS_EVERY_S = 5.0  # how often a running job's log is copied into job.log


class RayUnreachable(OSError):
    """The Ray head did not answer (refused, reset, timed out, or a 5xx)."""


class RayRefused(OperationFailed):
    """The Ray head answered, and said no (a 4xx other than a duplicate submission)."""


@dataclass(frozen=True)
class RaySettings:
    address: str
    home: str = ""
    python: str = "python"
    submission_prefix: str = "appliance"
    poll_s: float = 1.0
    request_timeout_s: float = 10.0
    lost_after_s: float = 300.0
    check_timeout_s: float = 180.0

    @classmethod
    def from_config(cls, config: Config) -> RaySettings:
        return cls(
            address=config["worker.ray.address"], home=config["worker.ray.home"],
            python=config["worker.ray.python"],
            submission_prefix=config["worker.ray.submission_prefix"],
            poll_s=config["worker.ray.poll_s"],
            request_timeout_s=config["worker.ray.request_timeout_s"],
            lost_after_s=config["worker.ray.lost_after_s"],
            check_timeout_s=config["worker.ray.check_timeout_s"],
        )


class RayJobsClient:
    """The few calls of the Ray Jobs REST API the worker needs, over ``http.client``."""

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(address.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"worker.ray.address: {address!r} is not the address of a Ray dashboard; "
                "expected http://HOST:PORT (the head's dashboard, port 8265 by default)")
        self.address = address.strip().rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or 8265
        self._base = parts.path.rstrip("/")
        self._timeout = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self._timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self._base + path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RayUnreachable(f"{method} {self.address}{path}: "
                                 f"{exc or type(exc).__name__}") from exc
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: Any = None,
              missing_ok: bool = False) -> Any:
        status, data = self._call(method, path, body)
        if status == 404 and missing_ok:
            return None
        text = data.decode(errors="replace")
        if status >= 500:
            raise RayUnreachable(f"{method} {self.address}{path}: HTTP {status}: "
                                 f"{_last_line(text)}")
        if status >= 300:
            raise RayRefused(f"Ray refused {method} {path}: HTTP {status}: {_last_line(text)}")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RayUnreachable(f"{method} {self.address}{path}: the answer is not JSON; "
                                 "is this a Ray dashboard?") from exc

    def version(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/version"))

    def submit(self, submission_id: str, entrypoint: str, *, num_cpus: float = 0,
               num_gpus: float = 0, env_vars: dict[str, str] | None = None,
               metadata: dict[str, str] | None = None) -> bool:
        """Submit; True when this call made the job, False when Ray already had that id."""
        body = {"entrypoint": entrypoint, "submission_id": submission_id,
                "runtime_env": {"env_vars": env_vars or {}}, "metadata": metadata or {},
                "entrypoint_num_cpus": num_cpus, "entrypoint_num_gpus": num_gpus}
        status, data = self._call("POST", "/api/jobs/", body)
        text = data.decode(errors="replace")
        if status == 200:
            return True
        # Ray answers a reused submission_id with an error naming it ("Job with
        # submission_id X already exists"): 400 from older heads, 500 wrapping the
        # agent's 400 from newer ones.
        if "already exists" in text and submission_id in text:
            return False
        if status >= 500:
            raise RayUnreachable(f"POST {self.address}/api/jobs/: HTTP {status}: "
                                 f"{_last_line(text)}")
        raise RayRefused(f"Ray refused the job: HTTP {status}: {_last_line(text)}")

    def info(self, submission_id: str) -> dict[str, Any] | None:
        """The job's details (``status``, ``message``, ...), or None when Ray has no such job."""
        found = self._json("GET", f"/api/jobs/{quote(submission_id)}", missing_ok=True)
        return None if found is None else dict(found)

    def logs(self, submission_id: str) -> str | None:
        found = self._json("GET", f"/api/jobs/{quote(submission_id)}/logs", missing_ok=True)
        return None if found is None else str(found.get("logs", ""))

    def stop(self, submission_id: str) -> bool | None:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL after its grace); None: no such job."""
        found = self._json("POST", f"/api/jobs/{quote(submission_id)}/stop", missing_ok=True)
        return None if found is None else bool(found.get("stopped"))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else "(no message)"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _append_log(jobdir: Path, text: str) -> None:
    with open(jobdir / LOG_FILE, "a", encoding="utf-8", errors="replace") as fh:
        fh.write(text)


class RayJob:
    """One attempt on the cluster: a small state machine driven by ``poll``.

    Nothing is sent at start: the first ``poll`` re-attaches to an earlier
    attempt's Ray job when there is one worth following, else submits. Every
    call to Ray is retried on the next poll when the head does not answer; only
    after ``lost_after_s`` without an answer does the attempt fail.
    """

    def __init__(self, executor: RayExecutor, launch: Launch) -> None:
        self._ex = executor
        self._client = executor.client
        self._launch = launch
        self._jobdir = launch.jobdir
        state = _read_json(self._jobdir / STATE_FILE)
        self._state: dict[str, Any] = state if isinstance(state, dict) else {}
        self._state.setdefault("submissions", [])
        self._earlier: str | None = self._state.get("submission_id")
        self.submission_id = executor.submission_id(launch, self._state["submissions"])
        self._submitted = False  # Ray is known to have self.submission_id
        self._sent = False  # a submission was sent, answered or not
        self._stop_wanted = False
        self._stop_sent = False
        self._outcome: Outcome | None = None
        self._next_poll = 0.0
        self._next_logs = 0.0
        self._silent_since: float | None = None

    @property
    def pid(self) -> int | None:
        return None  # nothing of this attempt runs on this server

    def progress(self) -> dict[str, Any] | None:
        return read_progress(self._jobdir)

    def terminate(self) -> None:
        self._stop_wanted = True
        self._send_stop()

    def kill(self) -> None:
        # Ray's stop already escalates to SIGKILL after its own grace period; asking
        # again covers a stop that did not get through.
        self._stop_wanted = True
        self._stop_sent = False
        self._send_stop()

    def _send_stop(self) -> None:
        if not (self._submitted or self._sent):
            return
        try:
            self._client.stop(self.submission_id)
            self._stop_sent = True
        except RayUnreachable as exc:
            log.warning("job %s: could not ask Ray to stop %s yet: %s",
                        self._launch.job_id, self.submission_id, exc)
        except RayRefused as exc:
            log.warning("job %s: Ray refused to stop %s: %s", self._launch.job_id,
                        self.submission_id, exc)
            self._stop_sent = True

    def poll(self) -> Outcome | None:
        if self._outcome is not None:
            return self._outcome
        now = time.monotonic()
        if now < self._next_poll:
            return None
        self._next_poll = now + self._ex.settings.poll_s
        try:
            if not self._submitted:
                return self._begin()
            if self._stop_wanted and not self._stop_sent:
                self._send_stop()
            info = self._client.info(self.submission_id)
        except RayUnreachable as exc:
            return self._unanswered(now, exc)
        except RayRefused as exc:
            return self._end(Outcome(ok=False, error=str(exc)))
        self._silent_since = None
        if info is None:
            return self._end(Outcome(ok=False, error=(
                f"the Ray cluster at {self._client.address} no longer knows job "
                f"{self.submission_id} (was the head restarted?)")))
        status = str(info.get("status"))
        if status in ACTIVE:
            if now >= self._next_logs:
                self._next_logs = now + LOGS_EVERY_S
                self._copy_logs()
            return None
        self._copy_logs()
        return self._end(self._outcome_of(status, info))

    # -- starting: re-attach or submit ---------------------------------------------

    def _begin(self) -> Outcome | None:
        if self._earlier is not None:
            earlier, self._earlier = self._earlier, None
            info = self._client.info(earlier)
            status = None if info is None else info.get("status")
            if status in (*ACTIVE, "SUCCEEDED"):
                self.submission_id = earlier
                self._submitted = True
                _append_log(self._jobdir, (
                    f"=== job {self._launch.job_id} attempt {self._launch.attempt}: "
                    f"re-attached by {self._launch.worker} to Ray job {earlier} "
                    f"({status}), not submitted again ===\n"))
                log.info("job %s: re-attached to Ray job %s (%s)", self._launch.job_id,
                         earlier, status)
                self._next_poll = 0.0
                return None
        if self._stop_wanted:
            # Stopped before it ever reached Ray; a submission whose answer was lost is
            # stopped too (Ray answers 404 when there is none).
            if self._sent:
                self._client.stop(self.submission_id)
            return self._end(Outcome(ok=False, error="stopped before it started on Ray",
                                     stopped=True))
        if not self._sent:
            self._prepare()
        self._sent = True
        made = self._client.submit(
            self.submission_id, self._ex.entrypoint(self._jobdir),
            num_cpus=self._launch.cpus, num_gpus=self._launch.num_gpus,
            env_vars={JOB_ENV: str(self._launch.job_id), "PYTHONUNBUFFERED": "1",
                      "CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
            metadata={"appliance_job_id": str(self._launch.job_id),
                      "appliance_attempt": str(self._launch.attempt),
                      "appliance_kind": self._launch.kind},
        )
        self._submitted = True
        self._next_poll = 0.0
        if not made:
            log.info("job %s: Ray already had %s; following it", self._launch.job_id,
                     self.submission_id)
        return None

    def _prepare(self) -> None:
        """Write the spec and record the submission id, before anything is sent."""
        launch = self._launch
        (self._jobdir / "work").mkdir(parents=True, exist_ok=True)
        for name in (RESULT_FILE, ERROR_FILE, PROGRESS_FILE):
            (self._jobdir / name).unlink(missing_ok=True)
        # Ray picks the node and its GPUs and sets CUDA_VISIBLE_DEVICES, so the child
        # sees them as 0..n-1; the placement on this server's GPUs does not apply there.
        write_spec(launch, home=self._ex.remote_home(launch.home),
                   gpus=list(range(launch.num_gpus)))
        self._state["submissions"].append(self.submission_id)
        self._state.update(submission_id=self.submission_id, attempt=launch.attempt,
                           address=self._client.address, logged=0)
        _write_json(self._jobdir / STATE_FILE, self._state)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _append_log(self._jobdir, (
            f"=== job {launch.job_id} ({launch.kind}) attempt {launch.attempt} submitted "
            f"{stamp} by {launch.worker} to Ray at {self._client.address} as "
            f"{self.submission_id}, CPUs {launch.cpus}, GPUs {launch.num_gpus} ===\n"))

    # -- while it runs and when it ends ------------------------------------------

    def _unanswered(self, now: float, exc: Exception) -> Outcome | None:
        if self._silent_since is None:
            self._silent_since = now
            log.warning("job %s: the Ray cluster does not answer (%s); the job keeps its "
                        "lease and is asked about again", self._launch.job_id, exc)
        silent = now - self._silent_since
        if silent < self._ex.settings.lost_after_s:
            return None
        if self._sent:
            # It may still run there, with nobody left to follow it: stopped once the
            # cluster answers (``RayExecutor.sweep``), so it holds no CPUs or GPUs for good.
            self._ex.orphaned(self.submission_id, self._launch.job_id)
        return self._end(Outcome(ok=False, error=(
            f"lost contact with the Ray cluster at {self._client.address} for {silent:.0f}s "
            f"(worker.ray.lost_after_s); the Ray job {self.submission_id} may still be "
            f"running there and is stopped once the cluster answers; last error: {exc}")))

    def _copy_logs(self) -> None:
        """Append what Ray's log of the job has beyond what job.log already holds."""
        try:
            text = self._client.logs(self.submission_id)
        except (RayUnreachable, RayRefused) as exc:
            log.warning("job %s: could not fetch the Ray job's log: %s",
                        self._launch.job_id, exc)
            return
        if text is None:
            return
        state = _read_json(self._jobdir / STATE_FILE)
        if isinstance(state, dict) and state.get("submission_id") == self.submission_id:
            self._state = state
        done = int(self._state.get("logged", 0))
        if len(text) <= done:
            return
        _append_log(self._jobdir, text[done:])
        self._state["logged"] = len(text)
        _write_json(self._jobdir / STATE_FILE, self._state)

    def _outcome_of(self, status: str, info: dict[str, Any]) -> Outcome:
        jobdir = self._jobdir
        if status == "SUCCEEDED":
            result_path = jobdir / RESULT_FILE
            if not result_path.exists():
                return Outcome(ok=False, error=(
                    f"the Ray job {self.submission_id} succeeded but {result_path} is not "
                    "there: the Ray nodes must mount this appliance's data directory "
                    "(worker.ray.home)"))
            result = _read_json(result_path)
            if result is None and result_path.read_text().strip() != "null":
                return Outcome(ok=False, error=f"{result_path} is not valid JSON")
            return Outcome(ok=True, result=result)
        error = _read_json(jobdir / ERROR_FILE)
        if status == "STOPPED":
            return Outcome(ok=False, error=f"stopped on Ray ({self.submission_id})",
                           stopped=True)
        if isinstance(error, dict):
            return Outcome(ok=False, error=str(error.get("error") or "failed"),
                           stopped=bool(error.get("cancelled")))
        message = str(info.get("message") or "").strip()
        if status != "FAILED":
            return Outcome(ok=False, error=f"the Ray job ended in an unknown state {status!r}")
        return Outcome(ok=False, error=f"the Ray job failed: {message[:1000] or 'no message'}")

    def _end(self, outcome: Outcome) -> Outcome:
        self._outcome = outcome
        return outcome


class RayExecutor:
    """Hands each attempt to a Ray cluster; see the module's docstring."""

    def __init__(self, settings: RaySettings, home: Path) -> None:
        if not settings.address.strip():
            raise ConfigError("worker.ray.address is empty: with worker.executor: ray, set it "
                              "to the Ray head's dashboard address, e.g. http://ray-head:8265")
        if settings.home and not PurePosixPath(settings.home).is_absolute():
            raise ConfigError(f"worker.ray.home: {settings.home!r} must be an absolute path")
        self.settings = settings
        self.home = Path(home)
        self.client = RayJobsClient(settings.address, settings.request_timeout_s)

    @classmethod
    def from_config(cls, config: Config, home: Path) -> RayExecutor:
        return cls(RaySettings.from_config(config), home)

    def remote_home(self, home: Path | None = None) -> str:
        return self.settings.home or str(home or self.home)

    def remote_path(self, local: Path) -> str:
        """Where a path in the data directory is seen on the Ray nodes."""
        relative = Path(local).relative_to(self.home)
        return str(PurePosixPath(self.remote_home()) / relative.as_posix())

    def entrypoint(self, jobdir: Path) -> str:
        remote = self.remote_path(jobdir)
        return (f"cd {shlex.quote(remote + '/work')} && exec "
                f"{shlex.quote(self.settings.python)} -m appliance.queue.child "
                f"{shlex.quote(remote)}")

    def submission_id(self, launch: Launch, used: list[str]) -> str:
        base = f"{self.settings.submission_prefix}-job-{launch.job_id}-attempt-{launch.attempt}"
        if base not in used:
            return base
        # The same attempt number again (a job handed back on shutdown keeps its count).
        n = 2
        while f"{base}-{n}" in used:
            n += 1
        return f"{base}-{n}"

    def start(self, launch: Launch) -> RayJob:
        launch.jobdir.mkdir(parents=True, exist_ok=True)
        return RayJob(self, launch)

    # -- Ray jobs nobody follows any more --------------------------------------------

    @property
    def _orphans_path(self) -> Path:
        return self.home / "jobs" / ORPHANS_FILE

    def orphaned(self, submission_id: str, job_id: int) -> None:
        """Remember a Ray job that may still run after its attempt gave up on it."""
        orphans = self.orphans()
        if all(o["submission_id"] != submission_id for o in orphans):
            orphans.append({"submission_id": submission_id, "job": job_id,
                            "since": time.time()})
            self._orphans_path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(self._orphans_path, orphans)

    def orphans(self) -> list[dict[str, Any]]:
        found = _read_json(self._orphans_path)
        return [o for o in found if isinstance(o, dict) and "submission_id" in o] \
            if isinstance(found, list) else []

    def sweep(self) -> None:
        """Stop the Ray jobs of attempts that lost the cluster, now that it may answer:
        called by the worker with its heartbeat. One that Ray stops, or no longer knows,
        leaves the list; one the head still does not answer for stays."""
        orphans = self.orphans()
        if not orphans:
            return
        left = []
        for orphan in orphans:
            sid = orphan["submission_id"]
            try:
                info = self.client.info(sid)
                if info is not None and info.get("status") in ACTIVE:
                    self.client.stop(sid)
                    log.warning("stopped the Ray job %s of job %s: its attempt had lost the "
                                "cluster and failed", sid, orphan.get("job"))
            except RayUnreachable:
                left.append(orphan)
            except RayRefused as exc:
                log.warning("Ray refused to stop the orphaned job %s: %s", sid, exc)
        if len(left) != len(orphans):
            _write_json(self._orphans_path, left)

    def check(self) -> None:
        """Prove at start that the cluster answers and its nodes see the data directory.

        A small job on the cluster reads a token written here and writes it back
        beside it; anything short of that is an error that says what to fix.
        """
        address = self.client.address
        try:
            self.client.version()
        except (RayUnreachable, RayRefused) as exc:
            raise OperationFailed(
                f"worker.ray.address: no Ray dashboard answers at {address} ({exc}); start "
                "the Ray head (ray start --head) or correct the address") from exc
        token = uuid.uuid4().hex
        check_dir = self.home / "jobs" / CHECK_DIR
        check_dir.mkdir(parents=True, exist_ok=True)
        local = check_dir / f"{token}.json"
        seen = check_dir / f"{token}.json.seen"
        _write_json(local, {"token": token})
        remote = self.remote_path(local)
        sid = f"{self.settings.submission_prefix}-check-{token[:16]}"
        entry = (f"{shlex.quote(self.settings.python)} -m appliance.worker.probe "
                 f"{shlex.quote(remote)}")
        shared = (f"Jobs read their spec and write their result in the data directory, so "
                  f"every Ray node must mount it at {self.remote_home()} (worker.ray.home; "
                  "empty means the same path as on this server) and have the appliance "
                  f"installed for {self.settings.python} (worker.ray.python)")
        try:
            self.client.submit(sid, entry, metadata={"appliance_check": token})
            deadline = time.monotonic() + self.settings.check_timeout_s
            while True:
                info = self.client.info(sid)
                status = None if info is None else info.get("status")
                if status not in ACTIVE:
                    break
                if time.monotonic() > deadline:
                    self.client.stop(sid)
                    raise OperationFailed(
                        f"the start-up check job {sid} on the Ray cluster at {address} did "
                        f"not finish within {self.settings.check_timeout_s:g}s "
                        "(worker.ray.check_timeout_s); is the cluster short of CPUs?")
                time.sleep(0.2)
            if status != "SUCCEEDED":
                tail = _last_line(self.client.logs(sid) or "")
                raise OperationFailed(
                    f"the Ray cluster at {address} can not run this appliance's jobs: the "
                    f"start-up check job ended {status or 'unknown to Ray'} reading {remote} "
                    f"(its log ends: {tail}). {shared}")
            if _read_json(seen) != {"token": token}:
                raise OperationFailed(
                    f"the Ray cluster at {address} does not share this appliance's data "
                    f"directory: the start-up check job read {remote} there, but what it "
                    f"wrote beside it did not appear at {seen}. {shared}")
        except (RayUnreachable, RayRefused) as exc:
            raise OperationFailed(f"the start-up check on the Ray cluster at {address} "
                                  f"failed: {exc}") from exc
        finally:
            local.unlink(missing_ok=True)
            seen.unlink(missing_ok=True)
        log.info("Ray cluster at %s runs jobs and sees the data directory at %s", address,
                 self.remote_home())
