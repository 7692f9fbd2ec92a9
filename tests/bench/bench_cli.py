"""Start-up benchmark of the command line: each command against ``python -c pass``.

    .venv/bin/python -m tests.bench.bench_cli [--repeat N] [--home DIR]

Runs ``--version``, ``--help`` and every listing and showing command (``COMMANDS``) in a
new interpreter each time (``python -m appliance``, as the installed ``appliance`` script
does), against a data directory with something in it: by default a fresh one seeded as the
console's tests seed theirs (users, a dataset, a model with two versions, a capacity
profile, a run, a job, a prompt, evaluation sets and runs), plus a schedule and a minute
of traffic; ``--home`` names another (its names must be those below). In each of N rounds
``python -c pass`` and the command run one after the other, so that load on the machine
falls on both sides alike; the table shows the medians, their difference (the goal:
<= 0.3 s) and their ratio, and how many commands meet the goal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 0.3

#: Every command that lists or shows, with arguments naming what ``seed_home`` made.
#: tests/cli/test_cli_startup.py checks that every 'list' and 'show' command is here,
#: and that none of them loads numpy, sqlite-utils or another heavy library.
COMMANDS: list[list[str]] = [
    ["--version"], ["--help"], ["models", "--help"],
    ["models", "list"], ["models", "list", "churn"], ["models", "show", "churn"],
    ["models", "show", "churn@2"], ["models", "history", "churn"],
    ["models", "policy", "churn"], ["models", "card", "churn@1"],
    ["datasets", "list"], ["datasets", "show", "customers"],
    ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "logs", "1"],
    ["runs", "list"], ["runs", "show", "1"],
    ["users", "list"], ["tokens", "list"], ["schedules", "list"], ["alerts"],
    ["audit", "log"], ["audit", "verify"], ["config", "show"], ["gpu"],
    ["prompts", "list"], ["prompts", "list", "capital"], ["prompts", "show", "capital"],
    ["prompts", "history", "capital"],
    ["evals", "list"], ["evals", "show", "facts"], ["evals", "runs", "facts"],
    ["evals", "report", "1"],
    ["capacity", "list"], ["capacity", "show", "churn@1"],
    ["monitoring", "policy", "churn"],
]

#: Reports that compute over the request log (latency percentiles with numpy when there
#: is traffic): timed too, but not held to the listing commands' rule about imports.
REPORTS: list[list[str]] = [["monitoring", "traffic", "churn"], ["llm", "usage"]]


def seed_home(root: Path) -> None:
    """A data directory with one of everything the listing commands show."""
    from appliance.config import parse_config
    from appliance.queue.jobs import JobSpec
    from appliance.scheduler.schedules import add_schedule
    from appliance.storage.home import Home
    from tests.helpers.console import log_traffic, seed

    home = Home(root=root)
    seed(home)
    db = home.db()
    try:
        add_schedule(db, parse_config({}), name="nightly", cron="0 3 * * *",
                     spec=JobSpec(kind="noop"), actor="bench")
    finally:
        db.close()
    log_traffic(home, model="churn", version=1, rate=20.0, seconds=60.0)


def _run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--home", type=Path, default=None,
                        help="an existing data directory (default: a fresh, seeded one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        config = Path(tmp) / "appliance.yaml"
        config.write_text("{}\n")
        env = {**os.environ, "APPLIANCE_CONFIG": str(config), "APPLIANCE_HOME": str(home)}
        if args.home is None:
            seed_home(home)
        commands = COMMANDS + REPORTS
        ours: dict[int, list[float]] = {i: [] for i in range(len(commands))}
        base: dict[int, list[float]] = {i: [] for i in range(len(commands))}
        for _ in range(args.repeat):
            for i, cmd in enumerate(commands):
                base[i].append(_run([sys.executable, "-c", "pass"], env))
                ours[i].append(_run([sys.executable, "-m", "appliance", *cmd], env))
        print(f"{'command':<32} {'ours s':>7} {'pass s':>7} {'diff s':>7} {'ratio':>6}  goal")
        met, worst = 0, 0.0
        for i, cmd in enumerate(commands):
            if cmd == REPORTS[0]:
                print("reports over the request log:")
            a, b = statistics.median(ours[i]), statistics.median(base[i])
            diff = a - b
            if cmd not in REPORTS:
                met += diff <= GOAL_S
                worst = max(worst, diff)
            mark = "ok" if diff <= GOAL_S else "OVER"
            print(f"{' '.join(cmd):<32} {a:7.3f} {b:7.3f} {diff:7.3f} {a / b:6.1f}  {mark}")
        print(f"{met} of {len(COMMANDS)} listing commands within {GOAL_S} s of python -c pass; "
              f"worst {worst:.3f} s; medians of {args.repeat} rounds; load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
