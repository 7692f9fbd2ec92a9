"""Helpers for the queue, worker and scheduler tests: short timings, daemons as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from appliance.config import SETTINGS, Config, parse_config
from appliance.gpu.inventory import GPU
from appliance.gpu.placement import MIB
from appliance.jobs import KINDS
from appliance.queue import jobs

FAST = {
    "queue": {"lease_s": 1.5},
    "worker": {"poll_s": 0.05, "shutdown_grace_s": 1.0, "kill_grace_s": 0.5},
    "scheduler": {"lock_s": 3.0, "sync_s": 0.2},
}


def fast_config(**extra: Any) -> Config:
    data: dict[str, Any] = {k: dict(v) for k, v in FAST.items()}
    for dotted, value in extra.items():
        section, _, key = dotted.partition("__")
        data.setdefault(section, {})[key] = value
    return parse_config(data)


def submit(db: Any, spec: jobs.JobSpec, config: Config, *, actor: str) -> int:
    """Queue a job of one of the appliance's kinds (``appliance.jobs.KINDS``)."""
    return jobs.submit(db, spec, config, kinds=KINDS, actor=actor)


def write_config(path: Path, config: Config) -> Path:
    changed = {s.name: config[s.name] for s in SETTINGS if config[s.name] != s.default}
    path.write_text(yaml.safe_dump(changed))
    return path


def gpu(index: int, total_mb: int, used_mb: int = 0) -> GPU:
    return GPU(index=index, uuid=f"GPU-test-{index}", name="Test GPU",
               memory_total=total_mb * MIB, memory_used=used_mb * MIB, utilization=0)


def daemon(home: Path, config_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``appliance --home HOME ARGS...`` as its own process."""
    env = dict(os.environ, APPLIANCE_CONFIG=str(config_file))
    return subprocess.Popen(
        [sys.executable, "-c", "from appliance.cli import main; main()", "--home", str(home),
         *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wait_for(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """SIGTERM a daemon started by ``daemon``, kill it past ``timeout``; return its output
    (printed too, so a failing test shows it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    print(out)
    return out
