"""Monitoring pages at scale: millions of request rows, read raw and from the roll-ups.

    .venv/bin/python -m tests.bench.bench_monitoring [--rows 10000000] [--llm-rows 200000]
        [--home DIR] [--rounds 3] [--no-baseline]

Fills monitoring.db with ``--rows`` request rows of two models over the last ``--hours``
(one in a hundred with kept inputs, as sampling keeps them; plain ``executemany`` in
transactions of 500k rows, as the serving daemon's writer would over time) and
``--llm-rows`` language-model request rows (every one with guardrail verdicts, one in
fifty blocked; a third naming a prompt version). Then times every console page that reads
monitoring.db, through the real Flask app (test client, logged in as a viewer), and
``appliance monitoring traffic`` and ``appliance llm usage`` in a subprocess (their time
includes the interpreter's start, timed alone on the last line; ``traffic()`` is timed in
process beside them). First on the raw rows (what every load cost before roll-ups: the
baseline, timed once, skipped with ``--no-baseline``), then after ``run_retention`` has
rolled them up, the median of ``--rounds`` rounds that each time every page once, side by
side with the ratio, against the 1 s goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.auth import sessions, users
from appliance.auth.permissions import Principal, Role
from appliance.config import parse_config
from appliance.console import create_app
from appliance.datasets.profile import build_profile
from appliance.datasets.table import Table
from appliance.monitoring import Window, run_retention, traffic
from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate
from appliance.storage.home import Home, init_home

GOAL_S = 1.0
CHUNK = 500_000
HOURS = 10
PASSWORD = "correct horse battery staple"
SIGNATURE = {"inputs": [{"name": "x1", "datatype": "FP32", "shape": [-1, 1]},
                        {"name": "x2", "datatype": "FP32", "shape": [-1, 1]},
                        {"name": "colour", "datatype": "BYTES", "shape": [-1, 1]}],
             "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                         {"name": "label", "datatype": "INT64", "shape": [-1]}],
             "feature_names": ["x1", "x2", "colour"]}
LLM_COLUMNS = ("ts", "day", "model", "version", "endpoint", "request_id", "status", "stream",
               "prompt_tokens", "completion_tokens", "queue_ms", "ttft_ms", "itl_ms", "e2e_ms",
               "finish_reason", "device", "device_s", "cost", "currency", "prompt_ref",
               "guardrail")


def fill(home: Home, rows: int, hours: float) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    start = now - hours * 3600
    sql = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join('?' for _ in COLUMNS)})")
    with home.monitoring_db() as mon:
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            ts = np.sort(rng.uniform(start, now, size=n))
            ids = np.arange(done, done + n)
            kept = ids % 100 == 0
            x1 = rng.normal(size=n).round(3)
            inputs = [json.dumps({"x1": [[float(x1[i])]], "x2": [[1.5]], "colour": ["red"]})
                      if kept[i] else None for i in range(n)]
            outputs = [json.dumps({"probabilities": [[0.3, 0.7]], "label": [1]})
                       if k else None for k in kept.tolist()]
            batch = zip(ts.tolist(), (ts // 60).astype(np.int64).tolist(),
                        np.where(ids % 5 == 0, "fraud", "churn").tolist(),
                        (1 + (ids % 7 == 0)).tolist(), ["primary"] * n,
                        [f"r{i}" for i in ids.tolist()],
                        np.where(rng.random(n) < 0.01, 500, 200).tolist(),
                        rng.lognormal(np.log(2500), 0.5, size=n).astype(np.int64).tolist(),
                        [30] * n, (1 + ids % 16).tolist(), [1] * n, [None] * n, inputs,
                        outputs, strict=True)
            with immediate(mon):
                mon.conn.executemany(sql, batch)
            done += n


def verdicts(triggered: bool) -> str:
    """A request's guardrail verdicts as the serving daemon stores them: input and output
    stages, the input one blocking a prompt injection when ``triggered``."""
    inp: dict[str, Any] = {"stage": "input", "action": None, "triggered": [], "ms": 0.4}
    if triggered:
        inp.update(action="block", triggered=["injection_patterns"], results=[
            {"check": "injection_patterns", "triggered": True, "action": "block",
             "score": None, "detail": "ignore previous instructions"}])
    return json.dumps([inp, {"stage": "output", "action": None, "triggered": [], "ms": 0.3}])


def fill_llm(home: Home, rows: int, hours: float) -> None:
    """Language-model request rows of two versions of one model, a third of them naming a
    prompt version, every one checked by the guardrails (one in fifty blocked), one in a
    hundred an error; in transactions of 500k rows."""
    rng = np.random.default_rng(1)
    now = time.time()
    start = now - hours * 3600
    clean, blocked = verdicts(False), verdicts(True)
    sql = (f"INSERT INTO llm_requests ({', '.join(LLM_COLUMNS)}) VALUES "
           f"({', '.join('?' for _ in LLM_COLUMNS)})")
    done = 0
    with home.monitoring_db() as mon:
        while done < rows:
            n = min(CHUNK, rows - done)
            ts = np.sort(rng.uniform(start, now, size=n))
            ids = np.arange(done, done + n)
            days = [time.strftime("%Y-%m-%d", time.gmtime(t)) for t in ts.tolist()]
            failed = ids % 100 == 7
            batch = zip(
                ts.tolist(), days, ["chat-llm"] * n, (1 + (ids % 4 == 0)).tolist(),
                ["chat"] * n, [f"l{i}" for i in ids.tolist()],
                np.where(failed, 500, 200).tolist(), [1] * n,
                rng.integers(20, 400, n).tolist(), rng.integers(5, 300, n).tolist(),
                [1.0] * n, [None if f else t for f, t in zip(
                    failed.tolist(), rng.uniform(20, 80, n).tolist(), strict=True)],
                [12.0] * n, rng.uniform(200, 900, n).tolist(), ["stop"] * n, ["cuda"] * n,
                rng.uniform(0.05, 0.4, n).tolist(), rng.uniform(1e-5, 1e-4, n).tolist(),
                ["EUR"] * n, np.where(ids % 3 == 0, "support@1", None).tolist(),
                [blocked if i % 50 == 0 else clean for i in ids.tolist()], strict=True)
            with immediate(mon):
                mon.conn.executemany(sql, batch)
            done += n


def register(home: Home) -> str:
    """The two models (churn with a reference profile, so its page draws kept inputs
    against it) and a viewer's session; returns the session id."""
    from appliance.registry import insert_version

    rng = np.random.default_rng(2)
    table = Table(["x1", "x2", "colour"], {"x1": "numeric", "x2": "numeric",
                                           "colour": "categorical"},
                  {"x1": rng.normal(size=1000), "x2": rng.normal(1.5, 0.1, size=1000),
                   "colour": ["red", "blue"] * 500}, 1000)
    with home.db() as db, immediate(db):
        digest = home.blobs.put_bytes(b"the pages read only the registry row")
        profile = home.blobs.put_bytes(json.dumps(build_profile(table)).encode())
        for name in ("churn", "fraud"):
            for _ in (1, 2):
                insert_version(db, name=name, onnx_digest=digest, actor="bench",
                               source="import", signature=SIGNATURE, profile_digest=profile)
    with home.db() as db:
        users.add_user(db, "viewer", "viewer", PASSWORD, actor="bench")
        return sessions.create_session(db, Principal(name="viewer", role=Role("viewer")))


def pages(home: Home, session: str) -> dict[str, Callable[[], Any]]:
    app = create_app({"home": str(home.root)})
    client = app.test_client()
    client.set_cookie("appliance-session", session)

    def get(url: str) -> Callable[[], Any]:
        def run() -> Any:
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"GET {url}: {response.status_code}")
            return response
        return run

    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}

    def command(*args: str) -> Callable[[], None]:
        def run() -> None:
            subprocess.run([sys.executable, "-m", "appliance", "--home", str(home.root),
                            *args], check=True, capture_output=True, env=env)
        return run

    def in_process() -> None:
        with home.monitoring_db() as mon:
            traffic(mon, "churn", Window.last(HOURS * 60))

    def startup() -> None:
        subprocess.run([sys.executable, "-m", "appliance", "--version"], check=True,
                       capture_output=True, env=env)

    return {
        "GET /monitoring": get("/monitoring"),
        f"GET /monitoring/churn?hours={HOURS}": get(f"/monitoring/churn?hours={HOURS}"),
        f"GET /api/models/churn/monitoring?hours={HOURS}":
            get(f"/api/models/churn/monitoring?hours={HOURS}"),
        "GET /llm": get("/llm"),
        "GET /api/llm/usage?since=24h": get("/api/llm/usage?since=24h"),
        "GET /guardrails": get("/guardrails"),
        "GET /api/guardrails": get("/api/guardrails"),
        "appliance monitoring traffic (process)":
            command("monitoring", "traffic", "churn", "--window", str(HOURS * 60)),
        "  of which traffic() itself, in process": in_process,
        "appliance llm usage (process)": command("llm", "usage"),
        "appliance llm usage --since 24h --json (process)":
            command("llm", "usage", "--since", "24h", "--json"),
        "appliance --version (the process start-up alone)": startup,
    }


def timed(timers: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """The median time of each, over ``rounds`` rounds that each time every one once (so a
    busy moment of the machine falls on all of them, not on one)."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, fn in timers.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--llm-rows", type=int, default=200_000)
    parser.add_argument("--hours", type=float, default=float(HOURS))
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of timing every page after the roll-up (medians)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip timing the pages on raw rows before the roll-up")
    parser.add_argument("--home", type=Path, default=None,
                        help="fill a data directory here and keep it; one filled before gets "
                             "--rows and --llm-rows more (give 0 to time it as it is)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(args.home or Path(tmp) / "home")
        if home.monitoring_db_path.exists():
            with home.db() as db:
                session = sessions.create_session(db, Principal(name="viewer",
                                                                role=Role("viewer")))
        else:
            init_home(home)
            session = register(home)
        started = time.perf_counter()
        fill(home, args.rows, args.hours)
        fill_llm(home, args.llm_rows, args.hours)
        print(f"filled {args.rows:,} request rows and {args.llm_rows:,} language-model rows "
              f"over {args.hours:g} h in {time.perf_counter() - started:.1f} s; monitoring.db "
              f"{home.monitoring_db_path.stat().st_size / 2**20:.0f} MiB", flush=True)
        timers = pages(home, session)
        raw = {} if args.no_baseline else timed(timers, 1)
        config = parse_config({})
        with home.monitoring_db() as mon:
            report = run_retention(mon, config)
        print(f"run_retention: rolled up {report.rolled_rows:,} request rows into "
              f"{report.minutes_written:,} minute aggregates and {report.llm_rolled_rows:,} "
              f"language-model rows into {report.llm_minutes_written:,} in "
              f"{report.seconds:.1f} s")
        rolled = timed(timers, args.rounds)
        with home.monitoring_db() as mon:
            incremental = run_retention(mon, config)
        print(f"run_retention again (nothing new): {incremental.seconds * 1000:.0f} ms")
        print(f"\n{f'page (median of {args.rounds} after the roll-up)':<52} {'raw rows':>9}"
              f" {'roll-ups':>9}"
              f" {'ratio':>7}  goal < {GOAL_S:g} s")
        for name in timers:
            before = f"{raw[name]:>8.3f}s" if name in raw else f"{'-':>9}"
            ratio = f"{raw[name] / max(rolled[name], 1e-9):>6.1f}x" if name in raw else \
                f"{'-':>7}"
            ok = "ok" if rolled[name] < GOAL_S else "MISSED"
            print(f"{name:<52} {before} {rolled[name]:>8.3f}s {ratio}  {ok}")


if __name__ == "__main__":
    main()
