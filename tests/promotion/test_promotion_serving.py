"""Signed models and rollback with the real serving daemon on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.promotion import ADMIN, MINIMAL_POLICY, imported_home, registry_server
from helpers.serving import call, mlp

from appliance import promotion, registry
from appliance.errors import OperationFailed
from appliance.storage.home import Home

SIZES = (32, 8, 2)


def body(x: np.ndarray) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = imported_home(tmp_path / "home", {1: mlp(1, sizes=SIZES), 2: mlp(2, sizes=SIZES),
                                          3: mlp(3, sizes=SIZES, seed=9)})
    db = h.db()
    try:
        promotion.set_policy(db, "mlp", MINIMAL_POLICY, actor="root")
    finally:
        db.close()
    return h


def test_a_tampered_onnx_file_is_refused_by_serving(home: Home) -> None:
    promotion.promote(home, "mlp@1", ADMIN)
    promotion.promote(home, "mlp@2", ADMIN)
    db = home.db()
    try:
        v2, v3 = registry.resolve(db, "mlp@2"), registry.resolve(db, "mlp@3")
        # Someone swaps version 2's bytes for other bytes and fixes up the recorded digest,
        # so the blob store's own digest check passes; only the signature can tell.
        db.execute("UPDATE model_versions SET onnx_digest = ? WHERE id = ?",
                   [v3.onnx_digest, v2.id])
        tampered = registry.resolve(db, "mlp@2")
        with pytest.raises(OperationFailed, match="signature does not verify"):
            promotion.verify_model(db, home.keys_dir, tampered,
                                   home.blobs.read_bytes(tampered.onnx_digest))
    finally:
        db.close()
    server, metrics, engine = registry_server(home)
    try:
        status, _, reply = call(server, "POST", "/v2/models/mlp/infer",
                                body(np.ones((1, 32), np.float32)))
        assert status in (404, 503), reply
        failures = engine.status()["failures"]
        assert [(f["model"], f["version"]) for f in failures] == [("mlp", 2)]
        assert "signature does not verify" in failures[0]["error"]
        _, _, text = call(server, "GET", "/metrics")
        assert 'appliance_model_load_failures_total{model="mlp",version="2"} 1' in text.decode()
        # The untouched, signed version 1 still loads when named.
        status, _, reply = call(server, "POST", "/v2/models/mlp/versions/1/infer",
                                body(np.ones((1, 32), np.float32)))
        assert status == 200, reply
    finally:
        server.stop()
    assert v2.onnx_digest != v3.onnx_digest


def test_rollback_under_load_fails_no_request(home: Home) -> None:
    promotion.promote(home, "mlp@1", ADMIN)
    promotion.promote(home, "mlp@2", ADMIN)
    server, _, engine = registry_server(home)
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def client() -> None:
        x = np.ones((1, 32), np.float32)
        while not stop.is_set():
            status, _, reply = call(server, "POST", "/v2/models/mlp/infer", body(x))
            results.append((status, reply.get("model_version", "") if isinstance(reply, dict)
                            else ""))

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        moved = promotion.rollback(home, "mlp", ADMIN, reason="bad numbers")
        assert (moved.previous, moved.version) == (2, 1)
        switched_at = time.monotonic()
        seen = len(results)
        while time.monotonic() - switched_at < 2.0:
            if any(v == "1" for _, v in results[seen:]):
                break
            time.sleep(0.02)
        took = time.monotonic() - switched_at
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        server.stop()
    assert took < 2.0, "serving did not switch to version 1 within 2 seconds"
    assert results and all(s == 200 for s, _ in results), {s for s, _ in results}
    versions = [v for _, v in results]
    assert "2" in versions and versions[-1] == "1"
