"""``appliance doctor``: one line per check, and a verdict.

Each check returns a ``Check``; a check that can not even run (the database
is not a database, say) fails with the reason rather than raising, so one
broken part never hides the state of the others.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.gpu.inventory import InventorySource
from appliance.storage import db as dbmod
from appliance.storage import migrations
from appliance.storage.home import DIR_MODE, KEYS_MODE, Home


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _database(home: Home, which: str) -> list[Check]:
    path = home.db_path if which == "appliance" else home.monitoring_db_path
    try:
        db = home.db() if which == "appliance" else home.monitoring_db()
    except ApplianceError as exc:
        return [Check(f"{which}.db integrity", False, str(exc))]
    try:
        problems = dbmod.integrity_check(db)
        checks = [
            Check(
                f"{which}.db integrity",
                not problems,
                "ok" if not problems else f"{path}: " + "; ".join(problems[:3]),
            )
        ]
        todo = migrations.pending(db, which)
        checks.append(
            Check(
                f"{which}.db migrations",
                not todo,
                f"current ({len(migrations.applied(db))} applied)"
                if not todo
                else f"{len(todo)} pending ({', '.join(todo[:3])}); run 'appliance init'",
            )
        )
        return checks
    except sqlite3.DatabaseError as exc:
        return [Check(f"{which}.db integrity", False, str(dbmod.storage_error(path, exc)))]
    finally:
        db.close()


def _blobs(home: Home, sample: int) -> Check:
    store = home.blobs
    digests = list(store.digests())
    if not digests:
        return Check("blob store", True, "empty")
    picked = random.sample(digests, min(sample, len(digests)))
    bad = []
    for d in picked:
        try:
            if not store.verify(d):
                bad.append(d)
        except OSError as exc:
            return Check("blob store", False, f"can not read {store.path(d)}: {exc.strerror}; "
                         "check the data directory's owner and permissions")
    if bad:
        return Check(
            "blob store", False,
            f"{len(bad)} of {len(picked)} sampled blobs do not match their hash, "
            f"e.g. {store.path(bad[0])}; restore from a backup",
        )
    return Check("blob store", True, f"{len(picked)} of {len(digests)} blobs re-hashed, all match")


def _permissions(home: Home) -> Check:
    problems = []
    for path, widest in ((home.root, DIR_MODE), (home.keys_dir, KEYS_MODE),
                         (home.blobs_dir, DIR_MODE), (home.jobs_dir, DIR_MODE)):
        try:
            st = path.stat()
        except FileNotFoundError:
            problems.append(f"{path} missing")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & ~widest:
            problems.append(f"{path} is {mode:o}, wider than {widest:o}")
        if not os.access(path, os.W_OK | os.X_OK):
            problems.append(f"{path} is not writable by this user")
    if problems:
        return Check("permissions", False, "; ".join(problems))
    return Check("permissions", True, "data directory, keys, blobs and jobs are private and writable")


def _disk(home: Home, min_free_mb: int) -> Check:
    usage = shutil.disk_usage(home.root)
    free_mb = usage.free // (1024 * 1024)
    ok = free_mb >= min_free_mb
    return Check(
        "free disk", ok,
        f"{free_mb} MiB free on the data directory's disk"
        + ("" if ok else f", below doctor.min_free_disk_mb = {min_free_mb}"),
    )


#: Where the roll-ups record the last request id they merged (``rollup_state``, written by
#: ``appliance.monitoring.rollup``, a layer above this one; a test keeps the two equal).
STATE_KEY = "rollup.last_id"
LLM_STATE_KEY = "llm_rollup.last_id"
AGGREGATE_ROW_BYTES = 400  # a request_minutes row with its sketch, measured on a busy model
#: A language-model request row and its two index entries, less its text columns
#: (measured: 226 bytes for 62 bytes of text).
LLM_ROW_FIXED_BYTES = 165
_LLM_TEXT = ("COALESCE(LENGTH(CAST(request_id AS BLOB)), 0) + LENGTH(model) + LENGTH(endpoint)"
             " + COALESCE(LENGTH(finish_reason), 0) + COALESCE(LENGTH(error), 0)"
             " + COALESCE(LENGTH(guardrail), 0) + COALESCE(LENGTH(prompt_ref), 0)")
_LLM_PROMPTS = ("COALESCE(LENGTH(CAST(prompt AS BLOB)), 0)"
                " + COALESCE(LENGTH(CAST(completion AS BLOB)), 0)")


@dataclass(frozen=True)
class _LlmLog:
    """The language-model request log's traffic and the bytes of its rows."""

    per_day: int  # requests in the last 24 hours, rolled up or not
    minutes: int  # llm_minutes rows of the last 24 hours
    rows: int  # raw rows in the file
    row_bytes: float  # a recent row, less its prompt and answer
    text_bytes: float  # a recent row's prompt and answer (kept with llm.log_text)


def _llm_log(mon: Any, now: float) -> _LlmLog:
    names = {r[0] for r in mon.execute(
        "SELECT name FROM sqlite_master WHERE name IN ('llm_requests', 'llm_minutes')")}
    if names != {"llm_requests", "llm_minutes"}:
        return _LlmLog(0, 0, 0, 0.0, 0.0)
    last_id = mon.execute("SELECT COALESCE(MAX(value), 0) FROM rollup_state WHERE key = ?",
                          [LLM_STATE_KEY]).fetchone()[0]
    rolled, minutes = mon.execute(
        "SELECT COALESCE(SUM(requests), 0), COUNT(*) FROM llm_minutes WHERE minute >= ?",
        [int((now - 86400) // 60)]).fetchone()
    raw = mon.execute("SELECT COUNT(*) FROM llm_requests WHERE id > ? AND ts >= ?",
                      [last_id, now - 86400]).fetchone()[0]
    low, high = mon.execute("SELECT MIN(id), MAX(id) FROM llm_requests").fetchone()
    if high is None:
        return _LlmLog(int(rolled) + int(raw), int(minutes), 0, 0.0, 0.0)
    text, prompts = mon.execute(
        f"SELECT AVG({_LLM_TEXT}), AVG({_LLM_PROMPTS}) FROM llm_requests WHERE id > ?",
        [high - PAYLOAD_SAMPLE]).fetchone()
    rows = mon.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0] \
        if high - low < 4 * PAYLOAD_SAMPLE else high - low + 1
    return _LlmLog(int(rolled) + int(raw), int(minutes), int(rows),
                   LLM_ROW_FIXED_BYTES + float(text or 0.0), float(prompts or 0.0))


def _request_log_growth(home: Home, config: Config, days: float = 30.0) -> Check:
    """Will the request log, at the last day's rate, fill the disk within ``days``?

    Raw rows grow until the oldest reaches ``monitoring.retention_days`` and are then
    deleted as fast as they come; their kept inputs and outputs likewise until
    ``monitoring.input_retention_days``, and they are most of a kept row (about 600 of
    760 bytes for the demo's model), so the two are measured and projected apart: the
    payload per request from the latest rows, the rest from the file less the payload
    of a sample of its rows. The per-minute roll-ups grow for good.
    """
    name = "request log growth"
    try:
        with home.monitoring_db() as mon:
            now = time.time()
            last_id = mon.execute("SELECT COALESCE(MAX(value), 0) FROM rollup_state"
                                  " WHERE key = ?", [STATE_KEY]).fetchone()[0]
            rolled, minutes = mon.execute(
                "SELECT COALESCE(SUM(requests), 0), COUNT(*) FROM request_minutes"
                " WHERE minute >= ?", [int((now - 86400) // 60)]).fetchone()
            raw = mon.execute("SELECT COUNT(*) FROM requests WHERE id > ? AND ts >= ?",
                              [last_id, now - 86400]).fetchone()[0]
            low, high, oldest = mon.execute(
                "SELECT MIN(id), MAX(id), MIN(ts) FROM requests").fetchone()
            payload, recent = _payload_per_row(mon, low, high)
            llm = _llm_log(mon, now)
            page_size = mon.execute("PRAGMA page_size").fetchone()[0]
            pages = mon.execute("PRAGMA page_count").fetchone()[0]
            free_pages = mon.execute("PRAGMA freelist_count").fetchone()[0]
    except (ApplianceError, sqlite3.Error) as exc:
        return Check(name, False, f"can not read monitoring.db: {exc}")
    per_day = int(rolled) + int(raw)
    if not per_day and not llm.per_day:
        return Check(name, True, "no requests in the last 24 hours")
    rows = (high - low + 1) if high is not None else 0
    # The file less what its language-model rows take, shared among the request rows.
    used = (pages - free_pages) * page_size - llm.rows * (llm.row_bytes + llm.text_bytes)
    per_row = max(0.0, used / rows - payload) if rows else 0.0
    retention = float(config["monitoring.retention_days"])
    input_retention = float(config["monitoring.input_retention_days"])
    age = (now - oldest) / 86400 if oldest is not None else 0.0
    raw_days = days if retention <= 0 else max(0.0, min(days, retention - age))
    input_days = raw_days if input_retention <= 0 else max(0.0, min(raw_days,
                                                                   input_retention - age))
    growth = (per_day * (per_row * raw_days + recent * input_days)
              + llm.per_day * (llm.row_bytes * raw_days + llm.text_bytes * input_days)
              + (minutes + llm.minutes) * AGGREGATE_ROW_BYTES * days)
    free = shutil.disk_usage(home.root).free
    mib = 1024 * 1024
    parts = [f"{per_day} requests in the last 24 h at about {per_row:.0f} bytes each, plus "
             f"{recent:.0f} bytes of kept inputs and outputs a request"] if per_day else []
    if llm.per_day:
        parts.append(f"{llm.per_day} language-model requests in the last 24 h at about "
                     f"{llm.row_bytes:.0f} bytes each, plus {llm.text_bytes:.0f} bytes of kept "
                     "prompts and answers")
    detail = (" and ".join(parts) + ": "
              f"+{growth / mib:.0f} MiB in {days:g} days (raw rows kept "
              f"{'forever' if retention <= 0 else f'{retention:g} days'}), "
              f"{free // mib} MiB free")
    if growth >= free:
        return Check(name, False, detail + "; lower monitoring.retention_days or "
                     "monitoring.input_retention_days, or give the data directory more disk")
    return Check(name, True, detail)


PAYLOAD_SAMPLE = 2000  # rows whose kept inputs and outputs are measured


def _payload_per_row(mon: Any, low: int | None, high: int | None) -> tuple[float, float]:
    """Bytes of kept inputs and outputs per request row: over the file (from rows picked at
    random by id) and over the latest rows (what the traffic adds now)."""
    if low is None or high is None:
        return 0.0, 0.0
    size = ("COALESCE(LENGTH(CAST(inputs AS BLOB)), 0)"
            " + COALESCE(LENGTH(CAST(outputs AS BLOB)), 0)")
    recent = mon.execute(f"SELECT AVG({size}) FROM requests WHERE id > ?",
                         [high - PAYLOAD_SAMPLE]).fetchone()[0]
    picked = random.Random(high).sample(range(low, high + 1), min(PAYLOAD_SAMPLE,
                                                                   high - low + 1))
    marks = ",".join("?" * len(picked))
    overall = mon.execute(f"SELECT AVG({size}) FROM requests WHERE id IN ({marks})",
                          picked).fetchone()[0]
    return float(overall or 0.0), float(recent or 0.0)


def _gpus(source: InventorySource) -> tuple[Check, Any]:
    inv = source.read()
    if not inv.gpus:
        return Check("gpus", True, f"none ({inv.reason})"), inv
    names = ", ".join(f"{g.index}: {g.name} {g.memory_total // 2**20} MiB" for g in inv.gpus)
    return Check("gpus", True, f"{len(inv.gpus)} found, driver {inv.driver} ({names})"), inv


def installed_profile_file() -> Path:
    """Where ``install.sh`` records the bundle's profile: beside the installed venv's other
    bundle files (``/opt/appliance/<version>/share/appliance/profile``)."""
    return Path(sys.prefix) / "share" / "appliance" / "profile"


def _gpu_count(inventory: Any) -> str:
    n = len(inventory.gpus)
    return f"{n} GPU" + ("" if n == 1 else "s")


def _profile(inventory: Any, profile_file: Path) -> Check:
    """Does the installed bundle's build fit this host: the cpu build on a GPU server
    trains on the CPU only."""
    name = "bundle profile"
    try:
        profile = profile_file.read_text().strip()
    except FileNotFoundError:
        return Check(name, True, "development install, profile not recorded")
    except OSError as exc:
        return Check(name, False, f"can not read {profile_file}: {exc.strerror}")
    if profile == "cpu" and inventory.gpus:
        return Check(name, False, f"cpu build on a host with {_gpu_count(inventory)}: torch "
                     "trains on the CPU only; install the cuda bundle")
    if profile == "cpu":
        return Check(name, True, "cpu build, and no GPU here")
    if profile == "cuda" and inventory.gpus:
        return Check(name, True, f"cuda build, {_gpu_count(inventory)} here")
    if profile == "cuda":
        return Check(name, True, "cuda build on a host without a GPU: it works, on the CPU "
                     "(the cpu bundle is smaller)")
    return Check(name, False, f"{profile_file} names an unknown profile {profile!r}; "
                 "reinstall the bundle")


def _torch(inventory: Any) -> Check:
    """Which build of torch this is and whether it sees the GPUs NVML found. A CPU build
    passes here (the bundle profile check judges it); a CUDA build that can not use the
    GPUs fails."""
    name = "torch"
    try:
        import torch
    except ImportError as exc:  # a broken install: the wheel or its libraries are missing
        return Check(name, False, f"does not load: {exc}")
    version = torch.__version__
    cuda = torch.version.cuda
    if not cuda:
        where = f" only, not on the {_gpu_count(inventory)} here" if inventory.gpus else ""
        return Check(name, True, f"{version}, a CPU build: trains on the CPU{where}")
    if not inventory.gpus:
        return Check(name, True, f"{version} (CUDA {cuda}): no GPU here, trains on the CPU")
    if not torch.cuda.is_available():
        return Check(name, False, f"{version} (CUDA {cuda}) does not see the "
                     f"{_gpu_count(inventory)} NVML found: the driver ({inventory.driver}) "
                     f"must support CUDA {cuda}")
    return Check(name, True, f"{version} (CUDA {cuda}) sees "
                 f"{torch.cuda.device_count()} of {_gpu_count(inventory)}")


def _providers(inventory: Any) -> Check:
    from appliance.onnxtools.providers import check_providers

    result = check_providers(inventory)
    ok = "CPUExecutionProvider" in result.usable
    detail = "usable: " + (", ".join(result.usable) or "none")
    if result.notes:
        detail += " (" + "; ".join(result.notes) + ")"
    return Check("onnxruntime providers", ok, detail)


def _genai(inventory: Any) -> Check:
    """onnxruntime-genai loads, its telemetry is off, and it sees the GPU where one is
    usable: language models run on CUDA only when both NVML and it agree."""
    name = "onnxruntime-genai"
    try:
        import onnxruntime_genai as og
    except ImportError as exc:  # a broken install: the wheel or its libraries are missing
        return Check(name, False, f"does not load: {exc}")
    version = getattr(og, "__version__", "?")
    cuda = bool(getattr(og, "is_cuda_available", lambda: False)())
    if inventory.gpus and not cuda:
        return Check(name, False, f"{version}: a GPU is present but this build of "
                     "onnxruntime-genai has no CUDA; install onnxruntime-genai-cuda")
    where = "CUDA and the CPU" if cuda and inventory.gpus else "the CPU"
    return Check(name, True, f"{version}, language models run on {where}")


def run_checks(
    home: Home, config: Config, gpu_source: InventorySource | None = None,
    progress: Callable[[Check], None] | None = None, profile_file: Path | None = None,
) -> list[Check]:
    """Every check, in order; ``profile_file`` (tests) stands in for the installed one."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        if progress:
            progress(check)

    if not home.root.is_dir():
        add(Check("data directory", False,
                  f"{home.root} does not exist; run 'appliance --home {home.root} init'"))
        return checks
    add(Check("data directory", True, str(home.root)))
    for which in ("appliance", "monitoring"):
        for c in _database(home, which):
            add(c)
    add(_blobs(home, config["doctor.blob_sample"]))
    add(_permissions(home))
    add(_disk(home, config["doctor.min_free_disk_mb"]))
    add(_request_log_growth(home, config))
    if gpu_source is None:
        from appliance.gpu.placement import inventory_source

        gpu_source = inventory_source(config["gpu.inventory_file"])
    gpu_check, inventory = _gpus(gpu_source)
    add(gpu_check)
    add(_profile(inventory, profile_file or installed_profile_file()))
    add(_torch(inventory))
    add(_providers(inventory))
    add(_genai(inventory))
    return checks
