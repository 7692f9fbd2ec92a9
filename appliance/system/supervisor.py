"""Run the four services as children of one process (``appliance up``, the demo).

Each child is ``python -m appliance --home H <service>`` in its own process
group, so stopping it stops whatever it started. When one child exits on its
own, the others are stopped too: a half-running appliance is worse than a
stopped one. Shutdown sends SIGTERM, waits a bounded time, then SIGKILL.

A child is also asked by the kernel to stop (SIGTERM, ``PR_SET_PDEATHSIG``) when
the supervising process dies without stopping it, killed with SIGKILL say, so
that no service is left holding its port as an orphan.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Config

SERVICES = ("serve", "console", "worker", "scheduler")
STOP_MARGIN_S = 10.0


def stop_grace_s(config: Config) -> float:
    """How long stopping waits before SIGKILL: long enough for the worker to let its jobs
    finish (``worker.shutdown_grace_s``), stop them (``worker.kill_grace_s``) and hand them
    back, as systemd's TimeoutStopSec allows it on a server."""
    return float(config["worker.shutdown_grace_s"] + config["worker.kill_grace_s"]
                 + STOP_MARGIN_S)


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    home: Path
    log_dir: Path
    extra_args: dict[str, list[str]] = field(default_factory=dict)
    config_file: str | None = None
    children: list[Child] = field(default_factory=list)

    def start(self, services: Sequence[str] = SERVICES) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = [sys.executable, "-m", "appliance", "--home", str(self.home)]
        if self.config_file:
            base += ["--config", self.config_file]
        for name in services:
            child = Child(name, base + [name] + self.extra_args.get(name, []),
                          self.log_dir / f"{name}.log")
            with open(child.log, "ab") as log:
                child.proc = subprocess.Popen(
                    child.argv, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
            self.children.append(child)

    def exited(self) -> list[Child]:
        return [c for c in self.children if c.proc is not None and c.proc.poll() is not None]

    def wait(self, stop: Callable[[], bool], poll_s: float = 0.2) -> Child | None:
        """Block until ``stop()`` or a child exits; return the child that exited, if one did."""
        while not stop():
            dead = self.exited()
            if dead:
                return dead[0]
            time.sleep(poll_s)
        return None

    def stop(self, grace_s: float = 20.0) -> dict[str, int | None]:
        for child in self.children:
            if child.alive and child.proc is not None:
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait()
        for child in self.children:  # anything the children left behind in their groups
            if child.proc is not None:
                _signal_group(child.proc, signal.SIGKILL)
        return {c.name: (c.proc.returncode if c.proc else None) for c in self.children}

    def tail(self, child: Child, lines: int = 20) -> str:
        try:
            text = child.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when its parent dies
    (Linux); None elsewhere. It runs in the child between fork and exec, so it only calls
    prctl and checks that the parent did not die before the request took effect."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc, linked into the interpreter
    except (OSError, AttributeError):
        return None

    def request() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return request


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
