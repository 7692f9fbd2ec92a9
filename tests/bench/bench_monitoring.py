"""Monitoring pages at scale: millions of request rows, read raw and from the roll-ups.

    .venv/bin/python -m tests.bench.bench_monitoring [--rows 10000000]

Fills monitoring.db with ``--rows`` request rows of two models over the last ``--hours``
(one in a hundred with kept inputs, as sampling keeps them), then times, best of 3, what
the console's monitoring pages and ``monitoring traffic`` call: the list of served models,
a model's traffic per minute and its totals over the window, and the whole overview. First
on the raw rows (what every load cost before roll-ups: the baseline), then after
``run_retention`` has rolled them up, side by side with the ratio, against the 1 s goal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import parse_config
from appliance.monitoring import Window, overview, run_retention, served_models, traffic
from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate
from appliance.storage.home import Home, init_home

GOAL_S = 1.0
CHUNK = 200_000


def fill(home: Home, rows: int, hours: float) -> None:
    rng = np.random.default_rng(0)
    now = time.time()
    start = now - hours * 3600
    sql = (f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
           f"({', '.join('?' for _ in COLUMNS)})")
    sample = json.dumps({"x1": [[0.5]], "x2": [[1.5]], "colour": ["red"]})
    out = json.dumps({"probabilities": [[0.3, 0.7]], "label": [1]})
    with home.monitoring_db() as mon:
        done = 0
        while done < rows:
            n = min(CHUNK, rows - done)
            ts = np.sort(rng.uniform(start, now, size=n))
            lat = rng.lognormal(np.log(2500), 0.5, size=n).astype(int)
            status = np.where(rng.random(n) < 0.01, 500, 200)
            batch = []
            for i in range(n):
                t = float(ts[i])
                kept = (done + i) % 100 == 0
                batch.append((t, int(t // 60), "churn" if i % 5 else "fraud", 1 + (i % 7 == 0),
                               "primary", f"r{done + i}", int(status[i]), int(lat[i]), 30,
                               1 + i % 16, 1, None, sample if kept else None,
                               out if kept else None))
            with immediate(mon):
                mon.conn.executemany(sql, batch)
            done += n


def best_s(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def pages(home: Home, window: Window) -> dict[str, Callable[[], Any]]:
    def with_mon(call: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with home.monitoring_db() as mon:
                return call(mon)
        return run

    return {
        "/monitoring (served models)": with_mon(served_models),
        "traffic per minute, 10 h": with_mon(lambda mon: traffic(mon, "churn", window)),
        "traffic totals, 10 h": with_mon(
            lambda mon: traffic(mon, "churn", window, by_minute=False)),
        "monitoring page overview": lambda: overview(home, "churn", window=window),
    }


def register_model(home: Home) -> None:
    from appliance.registry import insert_version

    with home.db() as db, immediate(db):
        digest = home.blobs.put_bytes(b"the pages read only the registry row")
        for name in ("churn", "fraud"):
            for _ in (1, 2):
                insert_version(db, name=name, onnx_digest=digest, actor="bench",
                               source="import", signature={
                                   "inputs": [], "outputs": [], "feature_names": []})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--hours", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        init_home(home)
        register_model(home)
        started = time.perf_counter()
        fill(home, args.rows, args.hours)
        print(f"filled {args.rows} request rows over {args.hours:g} h in "
              f"{time.perf_counter() - started:.1f} s; monitoring.db "
              f"{home.monitoring_db_path.stat().st_size / 2**20:.0f} MiB")
        window = Window.last(args.hours * 60)
        raw = {name: best_s(fn) for name, fn in pages(home, window).items()}
        config = parse_config({})
        with home.monitoring_db() as mon:
            report = run_retention(mon, config)
        print(f"run_retention: rolled up {report.rolled_rows} rows into "
              f"{report.minutes_written} minute aggregates in {report.seconds:.1f} s")
        rolled = {name: best_s(fn) for name, fn in pages(home, window).items()}
        with home.monitoring_db() as mon:
            incremental = run_retention(mon, config)
        print(f"run_retention again (nothing new): {incremental.seconds * 1000:.0f} ms")
        print(f"\n{'page data':<30} {'raw rows':>10} {'roll-ups':>10} {'ratio':>8}  goal")
        for name in raw:
            ok = "ok" if rolled[name] < GOAL_S else f"MISSED (> {GOAL_S:g} s)"
            print(f"{name:<30} {raw[name]:>9.3f}s {rolled[name]:>9.3f}s "
                  f"{raw[name] / max(rolled[name], 1e-9):>7.1f}x  {ok}")


if __name__ == "__main__":
    main()
