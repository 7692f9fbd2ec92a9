"""Start-up benchmark of the command line: each command against ``python -c pass``.

    .venv/bin/python -m tests.bench.bench_cli [--repeat N]

Runs ``--version``, ``--help`` and the listing and showing commands against a fresh data
directory, each N times in a new interpreter (``python -m appliance``, as the installed
``appliance`` script does), and prints the median wall time beside the median of
``python -c pass``: the difference (goal <= 0.3 s) and the ratio.
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

COMMANDS = [
    ["--version"], ["--help"], ["models", "--help"],
    ["models", "list"], ["models", "show", "nothing"], ["datasets", "list"], ["jobs", "list"],
    ["jobs", "show", "1"], ["runs", "list"], ["users", "list"], ["tokens", "list"],
    ["schedules", "list"], ["alerts"], ["audit", "log"], ["audit", "verify"], ["config", "show"],
    ["gpu"],
]


def _time(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = Path(tmp) / "appliance.yaml"
        config.write_text("{}\n")
        env = {**os.environ, "APPLIANCE_CONFIG": str(config), "APPLIANCE_HOME": str(home)}
        subprocess.run([sys.executable, "-m", "appliance", "init"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        base = _time([sys.executable, "-c", "pass"], env, args.repeat)
        print(f"{'command':<28} {'ours s':>8} {'python -c pass s':>17} {'diff s':>8} {'ratio':>7}  goal")
        worst = 0.0
        for cmd in COMMANDS:
            ours = _time([sys.executable, "-m", "appliance", *cmd], env, args.repeat)
            diff = ours - base
            worst = max(worst, diff)
            mark = "ok" if diff <= GOAL_S else "OVER"
            print(f"{' '.join(cmd):<28} {ours:8.3f} {base:17.3f} {diff:8.3f} {ours / base:7.1f}  {mark}")
        print(f"worst difference {worst:.3f} s (goal <= {GOAL_S} s); load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
