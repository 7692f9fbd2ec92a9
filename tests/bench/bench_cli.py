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
<= 0.3 s) and their ratio, and how many commands meet the goal. Beside the wall-clock
times it shows the median difference in CPU time (user + system) of the two processes,
which a busy machine inflates less than the wall clock.

The commands run from compiled bytecode, as an installed appliance does (pip compiles a
wheel's modules; Python caches what it compiles): a bytecode cache in the run's temporary
directory, filled by one untimed run of each command first, even where the environment
sets PYTHONDONTWRITEBYTECODE. ``--no-bytecode-cache`` keeps the environment as it is, so
that a process with no cache compiles every module of the appliance it imports.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one process (the children run one at a time)."""
    cpu, start = _cpu(), time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - start, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--home", type=Path, default=None,
                        help="an existing data directory (default: a fresh, seeded one)")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="run with the environment's bytecode settings as they are")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        config = Path(tmp) / "appliance.yaml"
        config.write_text("{}\n")
        env = {**os.environ, "APPLIANCE_CONFIG": str(config), "APPLIANCE_HOME": str(home)}
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        if args.home is None:
            seed_home(home)
        commands = COMMANDS + REPORTS
        if not args.no_bytecode_cache:
            for cmd in commands:  # compile once, untimed
                _run([sys.executable, "-m", "appliance", *cmd], env)
        ours: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(commands))}
        base: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(commands))}
        for _ in range(args.repeat):
            for i, cmd in enumerate(commands):
                base[i].append(_run([sys.executable, "-c", "pass"], env))
                ours[i].append(_run([sys.executable, "-m", "appliance", *cmd], env))
        print(f"{'command':<32} {'ours s':>7} {'pass s':>7} {'diff s':>7} {'ratio':>6}  goal"
              f"  {'cpu diff s':>10}")
        met, worst, cpu_met = 0, 0.0, 0
        for i, cmd in enumerate(commands):
            if cmd == REPORTS[0]:
                print("reports over the request log:")
            a = statistics.median(w for w, _ in ours[i])
            b = statistics.median(w for w, _ in base[i])
            cpu_diff = (statistics.median(c for _, c in ours[i])
                        - statistics.median(c for _, c in base[i]))
            diff = a - b
            if cmd not in REPORTS:
                met += diff <= GOAL_S
                cpu_met += cpu_diff <= GOAL_S
                worst = max(worst, diff)
            mark = "ok" if diff <= GOAL_S else "OVER"
            print(f"{' '.join(cmd):<32} {a:7.3f} {b:7.3f} {diff:7.3f} {a / b:6.1f}  {mark:<4}"
                  f"  {cpu_diff:10.3f}")
        cache = "without a bytecode cache" if args.no_bytecode_cache else "from cached bytecode"
        print(f"{met} of {len(COMMANDS)} listing commands within {GOAL_S} s of python -c pass; "
              f"worst {worst:.3f} s; in CPU time {cpu_met} of {len(COMMANDS)}; medians of "
              f"{args.repeat} rounds, {cache}; load average {os.getloadavg()[0]:.2f} on "
              f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
