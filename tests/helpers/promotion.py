"""Shared set-up of the promotion tests: trained versions, principals, a real serving daemon."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from appliance.auth import Principal, Role
from appliance.datasets import add_dataset
from appliance.registry import import_model
from appliance.serving.engine import Engine
from appliance.serving.http import ServerThread, ServingApp, loopback_authorizer
from appliance.serving.metrics import Metrics
from appliance.serving.registry_source import RegistrySource
from appliance.serving.requestlog import RequestLog
from appliance.storage.home import Home, init_home
from appliance.training import run_training

from .serving import FAST
from .tabular import write_csv

ADMIN = Principal(name="root-admin", role=Role.ADMIN)
OPERATOR = Principal(name="olga", role=Role.OPERATOR)
TRAINER = Principal(name="alice", role=Role.APPROVER)  # trains below, so may not approve
APPROVER = Principal(name="bob", role=Role.APPROVER)

MINIMAL_POLICY = """
gates: {metrics: [], latency: null, data_quality: null, parity: true, signature: true}
rollout:
  shadow: {min_requests: 20, min_minutes: 0, min_agreement: 0.9}
  canary: {weight: 0.5, min_requests: 20, min_minutes: 0}
  margins: {error_rate: 0.05, p99_latency_ratio: 3.0}
"""


def recipe(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "buyer", "dataset": "shop@1", "seed": 3,
        "model": {"template": "mlp_classifier", "params": {"epochs": 6, "hidden": [8]}}}
    body.update(overrides)
    return body


def trained_home(root: Path) -> Home:
    """buyer@1: barely trained (one epoch, a tiny step); buyer@2: trained properly. Same
    inputs and outputs, both by alice."""
    home = Home(root=root)
    init_home(home)
    db = home.db()
    try:
        add_dataset(db, home.blobs, "shop", write_csv(root.parent / "shop.csv", rows=400),
                    target="label", actor="alice")
    finally:
        db.close()
    run_training(home, recipe(model={"template": "mlp_classifier",
                                     "params": {"epochs": 1, "hidden": [8], "lr": 1e-6}}),
                 "alice")
    run_training(home, recipe(), "alice")
    return home


def copy_home(src: Home, dst: Path) -> Home:
    shutil.copytree(src.root, dst)
    return Home(root=dst)


def imported_home(root: Path, versions: dict[int, bytes]) -> Home:
    home = Home(root=root)
    init_home(home)
    db = home.db()
    try:
        for _, data in sorted(versions.items()):
            path = root / "model.onnx"
            path.write_bytes(data)
            import_model(db, home.blobs, "mlp", str(path), actor="alice")
    finally:
        db.close()
    return home


def registry_server(home: Home) -> tuple[ServerThread, Metrics, Engine]:
    """The real serving daemon, reading the registry of ``home``, on 127.0.0.1."""
    metrics = Metrics()
    engine = Engine(RegistrySource(home), replace(FAST, poll_interval_s=0.05), metrics=metrics,
                    request_log=RequestLog(home.monitoring_db, metrics, 10_000,
                                           flush_interval=0.05))
    app = ServingApp(engine, authorizer=loopback_authorizer(True), max_body_bytes=1 << 20)
    return ServerThread(app).start(), metrics, engine
