"""Batching, hot swap under load, broken versions, canary and shadow, on real sessions."""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
import threading
import time

import numpy as np
import pytest
from helpers.serving import (
    FAST,
    NOT_ONNX,
    MemorySource,
    Servers,
    call,
    fails_on_run,
    mlp,
    mlp_numpy,
)

from appliance.serving.engine import Engine
from appliance.serving.registry_source import RegistrySource
from appliance.serving.source import Route
from appliance.storage.home import Home

X = np.random.default_rng(5).standard_normal((1, 32)).astype(np.float32)
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32",
                               "data": X.ravel().tolist()}]}).encode()


def metric(server: object, line_start: str) -> float:
    text = call(server, "GET", "/metrics")[2].decode()  # type: ignore[arg-type]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(line_start):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load:
    """Threads that send requests over keep-alive connections and keep every answer."""

    def __init__(self, server: object, threads: int, path: str = "/v2/models/mlp/infer",
                 body: bytes = BODY, ids: bool = False) -> None:
        self.server = server
        self.path = path
        self.body = body
        self.ids = ids
        self.results: list[tuple[int, dict[str, object]]] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)  # type: ignore[attr-defined]
        n = 0
        while not self.stop.is_set():
            body = self.body
            if self.ids:
                doc = json.loads(body)
                doc["id"] = f"t{i}-{n}"
                body = json.dumps(doc).encode()
            n += 1
            try:
                conn.request("POST", self.path, body)
                resp = conn.getresponse()
                doc = json.loads(resp.read())
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                status, doc = -1, {"error": repr(exc)}
                conn.close()
                conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=30)  # type: ignore[attr-defined]
            with self._lock:
                self.results.append((status, doc))
        conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_concurrent_requests_are_merged_into_batches(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source, max_queue_delay_us=2000)
    with Load(server, threads=8) as load:
        time.sleep(1.5)
    assert load.results and all(s == 200 for s, _ in load.results)
    rows = metric(server, 'nv_inference_count{model="mlp"')
    runs = metric(server, 'nv_inference_exec_count{model="mlp"')
    assert rows == len(load.results)
    assert rows / runs > 1.5, f"{rows} rows in {runs} runs: requests were not merged"
    for _, doc in load.results[:20]:
        np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(1, 2),
                                   mlp_numpy(X, 1), atol=1e-4)


def test_hot_swap_under_load_fails_no_request(servers: Servers, source: MemorySource) -> None:
    server = servers(source)
    with Load(server, threads=4) as load:
        time.sleep(0.4)
        source.promote("mlp", 2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with load._lock:
                if load.results and load.results[-1][1].get("model_version") == "2":
                    break
            time.sleep(0.02)
        time.sleep(0.3)
        source.promote("mlp", 1)  # and back again (a rollback)
        time.sleep(0.6)
    statuses = [s for s, _ in load.results]
    assert statuses and all(s == 200 for s in statuses), {s for s in statuses if s != 200}
    versions = [doc["model_version"] for _, doc in load.results]
    assert "2" in versions and versions[-1] == "1"
    for _, doc in load.results:  # each answer is the computation of the version it names
        y = np.array(doc["outputs"][0]["data"]).reshape(1, 2)
        np.testing.assert_allclose(y, mlp_numpy(X, int(doc["model_version"])), atol=1e-4)
    assert metric(server, 'appliance_model_swaps_total{model="mlp"}') == 2
    assert 'appliance_model_loaded{model="mlp",version="2"' not in call(
        server, "GET", "/metrics")[2].decode()  # the old one was freed


def test_a_broken_version_never_replaces_a_working_one(
    servers: Servers, source: MemorySource
) -> None:
    source.add("mlp", 3, NOT_ONNX)
    source.add("mlp", 4, fails_on_run())
    server = servers(source)
    app = server.app
    for bad in (3, 4):
        with Load(server, threads=2) as load:
            time.sleep(0.2)
            source.promote("mlp", bad)
            time.sleep(0.5)
        assert all(s == 200 and doc["model_version"] == "1" for s, doc in load.results)
        failures = app.engine.status()["failures"]
        assert any(f["model"] == "mlp" and f["version"] == bad for f in failures)
        assert metric(server, f'appliance_model_load_failures_total{{model="mlp",version="{bad}"}}') == 1
    assert app.engine.routes["mlp"].primary == 1
    source.promote("mlp", 2)  # a good version still gets through afterwards
    deadline = time.monotonic() + 3
    while app.engine.routes["mlp"].primary != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert call(server, "POST", "/v2/models/mlp/infer", BODY)[2]["model_version"] == "2"


def test_a_model_that_never_loaded_is_503_not_ready(servers: Servers) -> None:
    source = MemorySource()
    source.add("bad", 1, NOT_ONNX)
    source.promote("bad", 1)
    server = servers(source)
    status, hdrs, doc = call(server, "POST", "/v2/models/bad/infer", BODY)
    assert status == 503 and hdrs["retry-after"] == "1" and "not ready" in doc["error"]
    assert call(server, "GET", "/v2/models/bad/ready")[0] == 503


def test_canary_split_is_stable_per_request_id_and_shadow_is_recorded_not_returned(
    servers: Servers, source: MemorySource, home: Home
) -> None:
    source.add("mlp", 3, mlp(3))
    source.route(Route(name="mlp", primary=1, canary=2, canary_weight=0.3, shadow=3))
    server = servers(source)
    answers: dict[str, str] = {}
    for i in range(200):
        doc = call(server, "POST", "/v2/models/mlp/infer",
                   {**json.loads(BODY), "id": f"r{i}"})[2]
        answers[f"r{i}"] = doc["model_version"]
    share = sum(v == "2" for v in answers.values()) / len(answers)
    assert 0.15 < share < 0.45, share
    assert set(answers.values()) == {"1", "2"}  # the shadow never answers
    for i in (0, 1, 2, 3):  # same id, same side
        again = call(server, "POST", "/v2/models/mlp/infer", {**json.loads(BODY), "id": f"r{i}"})
        assert again[2]["model_version"] == answers[f"r{i}"]
    db = home.monitoring_db()
    try:
        deadline = time.monotonic() + 10
        shadow: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            shadow = list(db.query("SELECT * FROM requests WHERE route = 'shadow'"))
            if len(shadow) >= 204:
                break
            time.sleep(0.05)
    finally:
        db.close()
    assert len(shadow) == 204 and all(r["version"] == 3 for r in shadow)
    y = np.array(json.loads(str(shadow[0]["outputs"]))["y"])
    np.testing.assert_allclose(y, mlp_numpy(X, 3), atol=1e-4)


def test_stop_closes_the_registry_connection(home: Home) -> None:
    source = RegistrySource(home)
    engine = Engine(source, FAST, providers=("CPUExecutionProvider",))
    asyncio.run(engine.start())
    conn = source._db
    assert conn is not None  # the first poll opened it
    engine.stop()
    assert source._db is None
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
