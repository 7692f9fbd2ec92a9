"""Drift check speed, memory and verdict agreement against Evidently's DataDriftPreset.

Run: ``.venv/bin/python -m tests.bench.bench_drift [--rows 100000,1000000] [--rounds 3]``

Evidently is installed only in this benchmark's own virtualenv,
``tests/bench/.venv`` (git-ignored; created on first run from the package
index), never in the appliance's environment. Both sides get the same
in-memory data: 20 numeric columns (current shifted by 0 to 0.3 standard
deviations, spread across columns so that verdicts differ) and 5 categorical
ones (two with their shares moved). Timed: Evidently's ``Report.run``; ours
``check()`` in evidently mode against the reference profile (built once, at
dataset registration, timed separately), and against the raw reference rows
(reference preparation included). Each round times every side once, Evidently's
right after ours, and medians over ``--rounds`` are reported. Memory: our tracemalloc
peak during each check; Evidently's peak RSS growth during its run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets.profile import build_profile
from appliance.datasets.table import Table
from appliance.drift import DriftOptions, Reference, check

VENV = Path(__file__).resolve().parent / ".venv"
PINS = ["evidently==0.7.23", "pandas<3"]
N_NUM, N_CAT = 20, 5

EVIDENTLY_SCRIPT = r"""
import json, resource, sys, time
import numpy as np, pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
data = np.load(sys.argv[1], allow_pickle=False)
def frame(prefix):
    cols = {}
    for key in data.files:
        side, name = key.split("__", 1)
        if side == prefix:
            cols[name] = data[key]
    return pd.DataFrame(cols)
ref, cur = frame("ref"), frame("cur")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0, c0 = time.perf_counter(), time.process_time()
snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
columns = {}
for m in snap.dict()["metrics"]:
    cfg = m["config"]
    if cfg.get("type", "").endswith("ValueDrift"):
        pvalue = "p_value" in cfg["method"]
        v, thr = m["value"], cfg["threshold"]
        columns[cfg["column"]] = {"method": cfg["method"], "value": v,
                                  "drifted": bool(v < thr) if pvalue else bool(v >= thr)}
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "extra_mb": (after - before) / 1024,
                  "columns": columns}))
"""


def make_data(rows: int, seed: int = 0) -> tuple[Table, Table]:
    rng = np.random.default_rng(seed)
    ref: dict[str, Any] = {}
    cur: dict[str, Any] = {}
    shifts = np.linspace(0.0, 0.3, N_NUM)
    for i in range(N_NUM):
        scale = 1.0 + i
        ref[f"num{i}"] = rng.normal(10 * i, scale, rows)
        cur[f"num{i}"] = rng.normal(10 * i + shifts[i] * scale, scale, rows)
    for j in range(N_CAT):
        cats = np.array([f"c{j}_{k}" for k in range(4 + j)])
        p = rng.dirichlet(np.ones(len(cats)) * 3)
        q = p if j < 3 else rng.permutation(p)
        ref[f"cat{j}"] = rng.choice(cats, rows, p=p)
        cur[f"cat{j}"] = rng.choice(cats, rows, p=q)

    def table(cols: dict[str, Any]) -> Table:
        types = {k: "categorical" if v.dtype.kind == "U" else "numeric" for k, v in cols.items()}
        values = {k: (v.tolist() if types[k] == "categorical" else v) for k, v in cols.items()}
        return Table(list(cols), types, values, rows)

    return table(ref), table(cur)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {', '.join(PINS)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    return python


def run_evidently(python: Path, ref: Table, cur: Table, workdir: Path) -> dict[str, Any]:
    path = workdir / "data.npz"
    arrays = {}
    for side, table in (("ref", ref), ("cur", cur)):
        for name in table.names:
            arrays[f"{side}__{name}"] = np.asarray(table.columns[name])
    np.savez(path, **arrays)
    out = subprocess.run([str(python), "-c", EVIDENTLY_SCRIPT, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


CPU: dict[str, list[float]] = {}  # process CPU seconds per side (all threads), by label


def timed(fn: Any, label: str = "") -> tuple[Any, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    if label:
        CPU.setdefault(label, []).append(time.process_time() - c0)
    return result, time.perf_counter() - t0


def peak_mb(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def bench(rows: int, python: Path | None, workdir: Path, rounds: int) -> None:
    ref, cur = make_data(rows)
    CPU.clear()
    ev_opts = DriftOptions(mode="evidently")
    profile, t_profile = timed(lambda: build_profile(ref))
    reference = Reference.from_profile(profile)
    check(reference, cur.columns, DriftOptions())  # warm-up: scipy's import is not timed
    times: dict[str, list[float]] = {"profile": [], "default": [], "raw": [], "evidently": []}
    ev: dict[str, Any] = {}
    for _ in range(rounds):  # the sides alternate, so a busy moment hits both alike
        prof_report, t = timed(lambda: check(reference, cur.columns, ev_opts), "profile")
        times["profile"].append(t)
        _, t = timed(lambda: check(reference, cur.columns, DriftOptions()))
        times["default"].append(t)
        raw_report, t = timed(lambda: check(Reference.from_table(ref), cur.columns, ev_opts),
                              "raw")
        times["raw"].append(t)
        if python is not None:
            ev = run_evidently(python, ref, cur, workdir)
            times["evidently"].append(ev["seconds"])
            CPU.setdefault("evidently", []).append(ev["cpu_seconds"])
    med = {k: statistics.median(v) for k, v in times.items() if v}
    mem_prof = peak_mb(lambda: check(reference, cur.columns, ev_opts))
    mem_raw = peak_mb(lambda: check(Reference.from_table(ref), cur.columns, ev_opts))
    print(f"\n== {rows:,} rows x {N_NUM} numeric + {N_CAT} categorical, "
          f"median of {rounds} round(s) ==")
    print(f"ours: reference profile build (once per dataset version) {t_profile:8.3f} s")
    print(f"ours: check vs profile, evidently mode                    {med['profile']:8.3f} s")
    print(f"ours: check vs profile, default mode                      {med['default']:8.3f} s")
    print(f"ours: check vs raw reference rows (exact), evidently mode {med['raw']:8.3f} s")
    print(f"ours: extra memory, check vs profile (tracemalloc peak)   {mem_prof:8.1f} MB")
    print(f"ours: extra memory, check vs raw rows (tracemalloc peak)  {mem_raw:8.1f} MB")
    if python is None:
        print("evidently: skipped")
        return
    print(f"evidently: DataDriftPreset Report.run                     {med['evidently']:8.3f} s")
    print(f"evidently: extra memory (peak RSS growth, last round)     {ev['extra_mb']:8.1f} MB")
    print(f"speed-up vs profile check: {med['evidently'] / med['profile']:6.1f}x   "
          f"vs raw-reference check: {med['evidently'] / med['raw']:6.1f}x")
    cpu = {k: statistics.median(v) for k, v in CPU.items()}
    print(f"CPU seconds (all threads; less sensitive to a busy machine): ours profile "
          f"{cpu['profile']:.3f}, raw {cpu['raw']:.3f}, evidently {cpu['evidently']:.3f}: "
          f"{cpu['evidently'] / cpu['profile']:.1f}x and {cpu['evidently'] / cpu['raw']:.1f}x")
    for label, report in (("raw", raw_report), ("profile", prof_report)):
        ours = {c.name: c.drifted for c in report.columns}
        agree = sum(ours[k] == v["drifted"] for k, v in ev["columns"].items())
        diff = [k for k, v in ev["columns"].items() if ours[k] != v["drifted"]]
        print(f"verdict agreement ({label} reference): {agree}/{len(ev['columns'])} columns"
              f" ({100 * agree / len(ev['columns']):.1f}%)" + (f"; differ: {diff}" if diff else ""))
    drifted = sum(v["drifted"] for v in ev["columns"].values())
    print(f"(evidently flagged {drifted} of {len(ev['columns'])} columns)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--no-evidently", action="store_true", help="time our side only")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, each timing both sides; medians are reported")
    args = parser.parse_args()
    python = None if args.no_evidently else ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in [int(r) for r in args.rows.split(",")]:
            bench(rows, python, Path(tmp), args.rounds)


if __name__ == "__main__":
    main()
