"""A real single-node Ray cluster on loopback runs a training job end to end (slow: the
head takes seconds to a minute to start)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.queue import fast_config, submit, wait_for
from helpers.tabular import write_csv

from appliance.datasets import add_dataset
from appliance.gpu.inventory import StaticSource
from appliance.queue.jobs import JobSpec, get_job, read_log
from appliance.queue.states import JobState
from appliance.registry import resolve
from appliance.storage.db import Database
from appliance.storage.home import Home
from appliance.worker import Worker, WorkerSettings

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_dashboard(address: str, temp: Path, deadline_s: float = 240.0) -> None:
    """``ray start`` returns before the dashboard (the Jobs API) answers, and on a busy
    machine it may take a minute more: wait for it, and show its log if it never does."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            logs = sorted(temp.glob("session_*/logs/dashboard.*"))
            tail = "".join(f.read_text(errors="replace")[-1500:] for f in logs[-2:])
            pytest.fail(f"the Ray dashboard at {address} did not answer in {deadline_s:.0f} s; "
                        f"its log ends:\n{tail}")
        time.sleep(0.5)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """``ray start --head`` on 127.0.0.1 (usage statistics off); its dashboard's address."""
    assert RAY.is_file(), "Ray is the optional extra appliance[ray]; installer/install.sh " \
                          "--dev installs it"
    temp = Path("/tmp") / f"ray-{os.getpid()}"  # Ray's socket paths must stay short
    port, dashboard = free_port(), free_port()
    # The dashboard gives each of its modules 30 s to start, and on a busy two-core machine
    # one can take longer: the head then runs without a dashboard (docs/scale-out.md).
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT="300")
    started = subprocess.run(
        [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(temp),
         "--disable-usage-stats"],
        capture_output=True, text=True, timeout=300, env=env)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, temp)
        yield address
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, timeout=120,
                       env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_training_job_runs_on_a_real_ray_cluster(ray_head: str, home: Home,
                                                   db: Database,
                                                   tmp_path: Path) -> None:
    add_dataset(db, home.blobs, "shop", write_csv(tmp_path / "shop.csv"), target="label",
                actor="t")
    config = fast_config(**{"worker__executor": "ray", "worker__ray.address": ray_head,
                            "worker__ray.poll_s": 0.2, "worker__ray.python": sys.executable,
                            "worker__ray.check_timeout_s": 120.0})
    worker = Worker(home, config, settings=WorkerSettings(lease_s=30, poll_s=0.1, max_jobs=1,
                                                          shutdown_grace_s=1, kill_grace_s=1,
                                                          cpus_total=2),
                    inventory=StaticSource([]))
    try:
        worker.executor.check()  # the cluster answers and sees the data directory
        recipe = {"name": "buyer", "dataset": "shop@1", "seed": 7,
                  "model": {"template": "mlp_classifier",
                            "params": {"epochs": 3, "hidden": [8]}}}
        job_id = submit(db, JobSpec("train", {"recipe": recipe}), config, actor="t")

        def done() -> bool:
            worker.step()
            return get_job(db, job_id).state.terminal

        wait_for(done, timeout=240, every=0.2)
    finally:
        worker.close()
    job = get_job(db, job_id)
    assert job.state is JobState.SUCCEEDED, (job.error, read_log(home, job_id)[0][-2000:])
    ray_state = (home.job_dir(job_id) / "ray.json").read_text()
    assert f"job-{job_id}-attempt-1" in ray_state  # it ran as a Ray job, not here
    mv = resolve(db, "buyer@1")
    assert mv.run_id is not None and "accuracy" in mv.metrics.get("test", {})
