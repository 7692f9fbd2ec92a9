"""A stand-in for a Ray head's Jobs REST API on loopback, running entrypoints as local processes.

It answers the routes the Ray executor uses the way Ray's dashboard does:
``POST /api/jobs/`` (a reused submission_id is refused with Ray's message),
``GET /api/jobs/{id}`` (404 for an unknown id), ``GET /api/jobs/{id}/logs``,
``POST /api/jobs/{id}/stop`` (SIGTERM to the entrypoint's process group, SIGKILL
after a grace period) and ``GET /api/version``. ``down()`` and ``up()`` close and
reopen the listening socket on the same port, to cut the worker off; the jobs
keep running meanwhile, as they would on a real cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

STOP_GRACE_S = 3.0


@dataclass
class FakeJob:
    submission_id: str
    entrypoint: str
    body: dict[str, Any]
    proc: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False
    start_time: float = field(default_factory=time.time)

    def status(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "RUNNING"
        if self.stopped:
            return "STOPPED"
        return "SUCCEEDED" if code == 0 else "FAILED"


class FakeRay:
    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.submits: list[dict[str, Any]] = []  # every POST /api/jobs/ body, refused or not
        self.requests: list[str] = []
        self.drop_next_submit_answer = False  # accept the job, then close without answering
        self._lock = threading.Lock()
        self._logs = Path(tempfile.mkdtemp(prefix="fake-ray-logs-"))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()
        for job in self.jobs.values():
            if job.proc.poll() is None:
                try:
                    os.killpg(job.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            job.proc.wait()
        shutil.rmtree(self._logs, ignore_errors=True)

    # -- the API -------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        path = req.path
        self.requests.append(f"{method} {path}")
        length = int(req.headers.get("Content-Length") or 0)
        body = json.loads(req.rfile.read(length)) if length else None
        if method == "GET" and path == "/api/version":
            return self._answer(req, 200, {"version": "4", "ray_version": "fake",
                                           "ray_commit": "fake", "session_name": "fake"})
        if method == "POST" and path == "/api/jobs/":
            return self._submit(req, body or {})
        parts = path.split("/")  # "", "api", "jobs", ID, [logs|stop]
        if len(parts) < 4 or parts[1:3] != ["api", "jobs"]:
            return self._answer(req, 404, "Not Found")
        sid = unquote(parts[3])
        job = self.jobs.get(sid)
        if job is None:
            return self._answer(req, 404, f"Job {sid} does not exist")
        tail = parts[4] if len(parts) > 4 else ""
        if method == "GET" and tail == "":
            status = job.status()
            message = {"RUNNING": "Job is currently running.",
                       "SUCCEEDED": "Job finished successfully.",
                       "STOPPED": "Job was intentionally stopped.",
                       "FAILED": (f"Job entrypoint command failed with exit code "
                                  f"{job.proc.returncode}, last available logs (truncated to "
                                  f"20,000 chars):\n{job.log_path.read_text()[-20000:]}")
                       }[status]
            return self._answer(req, 200, {
                "type": "SUBMISSION", "job_id": None, "submission_id": sid,
                "status": status, "message": message, "entrypoint": job.entrypoint,
                "metadata": job.body.get("metadata") or {},
                "runtime_env": job.body.get("runtime_env") or {},
                "driver_exit_code": job.proc.returncode,
                "start_time": int(job.start_time * 1000)})
        if method == "GET" and tail == "logs":
            return self._answer(req, 200, {"logs": job.log_path.read_text()})
        if method == "POST" and tail == "stop":
            return self._answer(req, 200, {"stopped": self._stop(job)})
        return self._answer(req, 404, "Not Found")

    def _submit(self, req: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        sid = str(body.get("submission_id") or f"raysubmit_{len(self.jobs) + 1}")
        with self._lock:
            self.submits.append(body)
            if sid in self.jobs:
                # What a current Ray head answers: the agent's 400, wrapped in a 500.
                return self._answer(req, 500, (
                    "Traceback (most recent call last):\n"
                    "RuntimeError: Request failed with status code 400: Traceback (most "
                    "recent call last):\nValueError: Job with submission_id "
                    f"{sid} already exists. Please use a different submission_id.\n."))
            env = dict(os.environ)
            env.update((body.get("runtime_env") or {}).get("env_vars") or {})
            log_path = self._logs / f"job-driver-{sid}.log"
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", body["entrypoint"]], stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True)
            self.jobs[sid] = FakeJob(sid, body["entrypoint"], body, proc, log_path)
        if self.drop_next_submit_answer:
            self.drop_next_submit_answer = False
            req.close_connection = True
            req.connection.shutdown(socket.SHUT_RDWR)  # the job exists; its answer is lost
            return None
        return self._answer(req, 200, {"job_id": None, "submission_id": sid})

    def _stop(self, job: FakeJob) -> bool:
        if job.proc.poll() is not None:
            return False
        job.stopped = True
        try:
            os.killpg(job.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False

        def escalate() -> None:
            try:
                job.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(job.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    return

        threading.Thread(target=escalate, daemon=True).start()
        return True

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, status: int, value: Any) -> None:
        if isinstance(value, str):
            data, kind = value.encode(), "text/plain"
        else:
            data, kind = json.dumps(value).encode(), "application/json"
        req.send_response(status)
        req.send_header("Content-Type", kind)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
