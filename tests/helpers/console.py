"""Helpers of the console tests: a data directory with users of every role, a
registered model, a dataset, a queued job and the audit key; logging in; CSRF tokens.
The fixtures built on them are in ``tests/console/conftest.py``.

Hashing a password with Argon2id takes a noticeable fraction of a second, so the data
directory is built once per test module (users added, one session opened per role
through ``appliance.auth``) and copied for each test; each test then changes only its
own copy.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from onnx import TensorProto, helper

from appliance.audit.service import ensure_key
from appliance.auth import sessions, users
from appliance.auth.permissions import Principal, Role
from appliance.capacity import store as capacity_store
from appliance.config import parse_config
from appliance.console import create_app
from appliance.datasets import add_dataset
from appliance.jobs import KINDS
from appliance.promotion import set_policy
from appliance.queue import jobs
from appliance.registry import insert_version, set_alias
from appliance.storage.db import immediate
from appliance.storage.home import Home, init_home
from appliance.training.runs import fail_run, start_run

ROLES = ("admin", "operator", "approver", "viewer")
PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SESSION_COOKIE = "appliance-session"
# A policy whose gates an imported model can pass: no held-out metrics, no evaluation set.
OPEN_POLICY = "gates: {metrics: [], data_quality: null, latency: {max_p99_ms: 1000}}\n"
SIGNATURE = {"inputs": [{"name": "age", "datatype": "FP32", "shape": [-1, 1]}],
             "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
             "feature_names": ["age"]}


def tiny_model(scale: float) -> bytes:
    """prediction = age * scale: a real ONNX graph that loads and runs in milliseconds."""
    node = helper.make_node("Mul", ["age", "scale"], ["prediction"])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def open_policy(home: Home, name: str = "churn") -> None:
    db = home.db()
    try:
        set_policy(db, name, OPEN_POLICY, actor="test")
    finally:
        db.close()


@dataclass(frozen=True)
class Template:
    root: Path
    sessions: dict[str, str]  # role -> session id, valid in every copy


def seed(home: Home) -> dict[str, str]:
    """One user per role (each with an open session), a model with two versions
    (production on the first; both real ONNX graphs whose reference profile is the
    dataset's) and a capacity profile of the first, a dataset, a failed run with one
    artifact, a queued job and the audit signing key."""
    init_home(home)
    ensure_key(home, "test")
    db = home.db()
    try:
        opened = {}
        for role in ROLES:
            users.add_user(db, role, role, PASSWORD, actor="test")
            opened[role] = sessions.create_session(db, Principal(name=role, role=Role(role)))
        csv = home.root / "customers.csv"
        csv.write_text("age,plan,churned\n" + "".join(
            f"{20 + i % 50},{'ab'[i % 2]},{i % 3 == 0}\n" for i in range(200)))
        dv, _ = add_dataset(db, home.blobs, "customers", csv, actor="test", target="churned")
        with immediate(db):
            for scale in (1.0, 2.0):
                insert_version(db, name="churn", onnx_digest=home.blobs.put_bytes(
                    tiny_model(scale)), signature=SIGNATURE, actor="test", source="import",
                    profile_digest=dv.profile_digest, dataset_version_id=dv.id,
                    metrics={"auc": 0.9})
        set_alias(db, "churn", 1, "production", "test")
        capacity_store.save(db, "churn@1", capacity_profile(), actor="test")
        # A run that failed after leaving one artifact, for the Runs pages.
        run_id = start_run(db, model_name="churn", recipe={}, code_hash="0" * 64,
                           dataset_version_id=dv.id, dataset_digest=dv.digest, params={},
                           environment={}, env_hash="0" * 64, seed=0, device="cpu",
                           actor="test")
        note = b"seeded\n"
        db.execute("INSERT INTO run_artifacts (run_id, path, digest, size_bytes)"
                   " VALUES (?, 'notes.txt', ?, ?)", [run_id, home.blobs.put_bytes(note),
                                                      len(note)])
        fail_run(db, run_id, error="seeded", log_digest=None, actor="test")
        jobs.submit(db, jobs.JobSpec(kind="noop"), parse_config({}), kinds=KINDS,
                    actor="test")
    finally:
        db.close()
    return opened


def make_app(home: Home, **settings: Any) -> Flask:
    return create_app({"home": str(home.root), **settings})


def login_csrf(client: FlaskClient) -> str:
    page = client.get("/login")
    match = CSRF.search(page.get_data(as_text=True))
    assert match, "the login page carries a CSRF token"
    return match.group(1)


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    """Log in through the form, as a browser does (one Argon2id verification)."""
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": login_csrf(client), "next": "/"})


def csrf_of(client: FlaskClient, url: str = "/account/password") -> str:
    match = CSRF.search(client.get(url).get_data(as_text=True))
    assert match, f"{url} carries a CSRF token"
    return match.group(1)


def client_with_session(app: Flask, session_id: str) -> FlaskClient:
    c = app.test_client()
    c.set_cookie(SESSION_COOKIE, session_id)
    return c


def session_token(client: FlaskClient) -> str | None:
    cookie = client.get_cookie(SESSION_COOKIE)
    return cookie.value if cookie else None


# --- capacity: a profile and request-log traffic whose service time is known -------------

RUN_S, ROW_S = 0.002, 0.0001  # a run of b rows takes 2 ms + 0.1 ms per row


def capacity_profile(batch_sizes: tuple[int, ...] = (1, 4, 16, 64),
                     concurrency: tuple[int, ...] = (1, 2, 4), unstable: int = 1
                     ) -> dict[str, Any]:
    """A tabular profile as ``appliance.capacity.profile`` stores one, made by hand: every
    point's runs take RUN_S + ROW_S per row; the last ``unstable`` points never settled."""
    points = []
    for b in batch_sizes:
        for c in concurrency:
            run_us = (RUN_S + ROW_S * b * c) * 1e6
            latency = run_us * 1.2
            points.append({
                "batch_size": b, "concurrency": c, "stable": True, "windows": 3,
                "seconds": 3.0, "requests_per_s": round(c / latency * 1e6, 2),
                "rows_per_s": round(b * c / latency * 1e6, 2),
                "latency_us": {"p50": latency, "p95": latency * 1.3, "p99": latency * 1.6},
                "queue_us": {"p50": run_us * 0.1, "p95": run_us * 0.2, "p99": run_us * 0.3},
                "compute_us": {"p50": run_us, "p95": run_us * 1.1, "p99": run_us * 1.2},
                "run_rows_mean": b * c, "run_us": {"p50": run_us, "p95": run_us, "p99": run_us},
                "service": {"rows": b * c, "requests": c, "period_us": run_us},
                "memory_kind": "resident",
                "memory_bytes": 100 * 2**20 + 4096 * b * c, "activity_kind": "cpu",
                "activity_percent": min(100.0, 30.0 * c)})
    for p in points[len(points) - unstable:]:
        p["stable"], p["windows"] = False, 10
    return {"kind": "tabular", "device": "cpu", "provider": "CPUExecutionProvider",
            "model_bytes": 300_000, "duration_s": 12.5, "skipped": [],
            "settings": {"max_batch_size": 256, "max_queue_delay_us": 0,
                         "intra_op_threads": 1},
            "points": points}


def log_traffic(home: Home, *, model: str = "churn", version: int = 1, rate: float = 100.0,
                seconds: float = 60.0, end: float | None = None, seed: int = 0) -> int:
    """Request-log rows of a FIFO server that runs whatever waits (up to 64 rows) at once,
    each run taking RUN_S + ROW_S per row: ``rate`` × ``seconds`` Poisson arrivals within
    the ``seconds`` before ``end`` (now), every one answered; the number of rows written."""
    rng = np.random.default_rng(seed)
    end = time.time() - 1 if end is None else end
    gaps = np.cumsum(rng.exponential(1 / rate, int(rate * seconds)))
    arrivals = end - seconds + gaps / gaps[-1] * (seconds - 1)  # all answered before end
    rows: list[dict[str, Any]] = []
    free, i = 0.0, 0
    while i < len(arrivals):
        start = max(free, float(arrivals[i]))
        j = i
        while j < len(arrivals) and arrivals[j] <= start and j - i < 64:
            j += 1
        done = start + RUN_S + ROW_S * (j - i)
        for k in range(i, j):
            rows.append({"ts": done, "minute": int(done // 60), "model": model,
                         "version": version, "route": "primary", "status": 200,
                         "latency_us": int((done - arrivals[k]) * 1e6),
                         "queue_us": int((start - arrivals[k]) * 1e6), "batch_size": j - i,
                         "rows": 1})
        free, i = done, j
    mon = home.monitoring_db()
    try:
        mon["requests"].insert_all(rows, batch_size=5000)
    finally:
        mon.close()
    return len(rows)
