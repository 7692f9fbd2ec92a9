"""A served model and a synthetic request log for the monitoring tests.

Rows go into monitoring.db's ``requests`` table exactly as the serving
daemon's writer puts them (same columns, same JSON tensors), with outputs
computed by the model's real ONNX graph.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from appliance import registry
from appliance.config import parse_config
from appliance.datasets import add_dataset
from appliance.onnxtools.sessions import cpu_session
from appliance.serving.requestlog import COLUMNS
from appliance.storage.db import immediate
from appliance.storage.home import Home
from appliance.training import run_training

from .tabular import write_csv

CONFIG = parse_config({})


def train_served_model(home: Home, tmp: Path, name: str = "buyer") -> registry.ModelVersion:
    db = home.db()
    try:
        add_dataset(db, home.blobs, "shop", write_csv(tmp / "shop.csv", rows=400), actor="t",
                    target="label")
    finally:
        db.close()
    recipe = {"name": name, "dataset": "shop@1", "seed": 7,
              "model": {"template": "mlp_classifier", "params": {"epochs": 3, "hidden": [8]}}}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = run_training(home, tmp / "recipe.yaml", "trainer", config=CONFIG)
    db = home.db()
    try:
        registry.set_alias(db, name, int(result.model_version.split("@")[1]), "production", "t")
        return registry.resolve(db, name)
    finally:
        db.close()


def features(n: int, seed: int, *, x1_shift: float = 0.0, colours: tuple[str, ...] = (
        "red", "green", "blue")) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n) + x1_shift
    x2 = rng.normal(size=n)
    return {"x1": x1, "x2": x2, "colour": rng.choice(list(colours), size=n).astype(object),
            "member": (rng.random(n) < 0.66).astype(float), "price": 2 * x1 - x2 + 3}


def truth(f: dict[str, np.ndarray]) -> list[str]:
    """The labelling rule of helpers/tabular.py."""
    return ["true" if v else "false"
            for v in (f["x1"] + 0.5 * f["x2"] + (f["colour"] == "red")) > 0.3]


def log_requests(home: Home, mv: registry.ModelVersion, f: dict[str, np.ndarray], *,
                 start: float, prefix: str, spacing: float = 1.0,
                 latency_us: int = 2000) -> list[str]:
    """One sampled single-row request per row of ``f``; returns the request ids."""
    session = cpu_session(home.blobs.read_bytes(mv.onnx_digest))
    n = len(f["x1"])
    feeds = {k: (v.astype(object) if v.dtype.kind in "UO" else v.astype(np.float32)).reshape(n, 1)
             for k, v in f.items()}
    probabilities, label = session.run(["probabilities", "label"], feeds)
    rows = []
    ids = []
    for i in range(n):
        ts = start + i * spacing
        inputs = {k: ([str(v[i])] if v.dtype.kind in "UO" else [[float(v[i])]])
                  for k, v in f.items()}
        outputs = {"probabilities": [probabilities[i].tolist()], "label": [int(label[i])]}
        rid = f"{prefix}-{i}"
        ids.append(rid)
        rows.append((ts, int(ts // 60), mv.name, mv.version, "primary", rid, 200, latency_us,
                     10, 1, 1, None, json.dumps(inputs), json.dumps(outputs)))
    mon = home.monitoring_db()
    try:
        with immediate(mon):
            mon.conn.executemany(
                f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in COLUMNS)})", rows)
    finally:
        mon.close()
    return ids
