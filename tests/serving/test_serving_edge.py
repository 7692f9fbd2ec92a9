"""The serving daemon tried as an attacker would: parsing, typing, limits, the request log."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.promotion import ADMIN, MINIMAL_POLICY, imported_home, registry_server
from helpers.serving import MemorySource, Servers, call, mlp, mlp_numpy, raw, text_model

from appliance import promotion, registry
from appliance.serving.engine import Engine
from appliance.serving.http import Limits, ServingApp, loopback_authorizer
from appliance.serving.metrics import Metrics
from appliance.serving.requestlog import Entry, RequestLog
from appliance.storage.home import Home

X1 = np.arange(32, dtype=np.float32).reshape(1, 32) / 32


def infer_body(x: np.ndarray = X1, **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


def statuses(out: bytes) -> list[int]:
    return [int(part[:3]) for part in out.split(b"HTTP/1.1 ")[1:] if part[:3].isdigit()]


def wait_rows(home: Home, n: int) -> list[dict[str, Any]]:
    db = home.monitoring_db()
    try:
        deadline = time.monotonic() + 10
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = list(db.query("SELECT * FROM requests ORDER BY id"))
            if len(rows) >= n:
                break
            time.sleep(0.05)
        return rows
    finally:
        db.close()


# ---- the request log can not die ---------------------------------------------------------


POISONED = [
    Entry(1.0, "mlp", 1, "primary", "\ud800", 200, 10, 0, 1, 1),  # a lone surrogate id
    Entry(1.0, "mlp", 1, "primary", None, 400, 10, 0, 0, 0, "unknown input '\udcff'"),
    Entry(1.0, "\ud800", 1, "primary", None, 404, 10, 0, 0, 0),
    Entry(1.0, "mlp", 1, "primary", None, 200, 2**70, 0, 1, 1),  # beyond SQLite's integers
    Entry(1.0, "mlp", 1, "shadow", None, 200, 10, 0, 1, 1, None,
          {"c": np.array([1 + 2j])}, None),  # a sampled tensor JSON can not hold
]


def test_the_request_log_writer_survives_every_poisoned_row(home: Home) -> None:
    metrics = Metrics()
    log = RequestLog(home.monitoring_db, metrics, 1000, flush_interval=0.02)
    log.start()
    try:
        for i, bad in enumerate(POISONED):
            log.record(Entry(2.0, "mlp", 1, "primary", f"before-{i}", 200, 10, 0, 1, 1))
            log.record(bad)
            log.record(Entry(3.0, "mlp", 1, "primary", f"after-{i}", 200, 10, 0, 1, 1))
            # alone in a flush too, not only beside good rows
            deadline = time.monotonic() + 10
            while metrics.log_dropped < 2 * i + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            log.record(bad)
        log.record(Entry(4.0, "mlp", 1, "primary", "last", 200, 10, 0, 1, 1))
        rows = wait_rows(home, 2 * len(POISONED) + 1)
        assert log._thread.is_alive()
    finally:
        log.close()
    ids = [r["request_id"] for r in rows]
    want = [x for i in range(len(POISONED)) for x in (f"before-{i}", f"after-{i}")] + ["last"]
    assert ids == want
    assert metrics.log_dropped == metrics.log_unstorable == 2 * len(POISONED)
    assert metrics.log_written == len(want)
    assert "appliance_request_log_unstorable_total 10" in metrics.render()


def test_a_poisoned_request_is_refused_and_later_requests_are_logged(
    servers: Servers, source: MemorySource, home: Home
) -> None:
    server = servers(source)
    lone = b'{"id":"\\ud800","inputs":[{"name":"x","shape":[1,32],"datatype":"FP32","data":%s}]}'
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer",
                          lone % json.dumps(X1.ravel().tolist()).encode())
    assert status == 400 and "id" in doc["error"]
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", b'{"inputs":[{"name":'
                          b'"\\udcff","shape":[1,32],"datatype":"FP32","data":[0]}]}')
    assert status == 400
    for i in range(3):
        assert call(server, "POST", "/v2/models/mlp/infer", infer_body(id=f"ok-{i}"))[0] == 200
    rows = wait_rows(home, 4)
    assert [r["request_id"] for r in rows if r["status"] == 200] == ["ok-0", "ok-1", "ok-2"]
    # the refusal naming the surrogate input could not be stored: dropped and counted
    assert len(rows) == 4 and [r["status"] for r in rows].count(400) == 1
    metrics = server.app.engine.metrics
    assert metrics.log_unstorable == metrics.log_dropped == 1


# ---- HTTP/1.1 parsing --------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 41\r\nContent-Length: 0\r\n\r\n"
     b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
     400),
    (b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}", 400),
    (b"GET /v2/health/live HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400),  # obs-fold
    (b"GET /v2/health/live HTTP/1.1\r\nX-A: a\r\n Connection: close\r\n\r\n", 400),
    (b"GET /v2/health/live HTTP/1.1\nHost: a\n\n", 400),  # bare LF
    (b"GET /v2/health/live HTTP/1.1\r\nHost: a\n\r\n", 400),
    (b"GET /v2/health/live HTTP/9.9\r\n\r\n", 505),
    (b"GET /v2/health/live HTTP/2.0\r\n\r\n", 505),
    (b"GET /v2/health/live FOO/9\r\n\r\n", 400),
    (b"POST /v2/models/mlp/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
])
def test_ambiguous_or_malformed_requests_get_one_answer_then_close(
    servers: Servers, source: MemorySource, request_bytes: bytes, status: int
) -> None:
    server = servers(source)
    out = raw(server, request_bytes)
    assert statuses(out) == [status], out
    assert not out.endswith(b"<timeout>"), out
    assert b"connection: close" in out.lower()


def test_chunked_bodies_are_read_and_limited(servers: Servers, source: MemorySource) -> None:
    server = servers(source, max_body_bytes=4096)
    body = json.dumps(infer_body()).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                      for i in range(0, len(body), 100))
    out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert statuses(out) == [200], out
    big = b"2000\r\n" + b" " * 0x2000 + b"\r\n0\r\n\r\n"
    out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
              + big)
    assert statuses(out) == [413], out


@pytest.mark.parametrize("version", ["1_0", "+1", "-1", "0", "99999999999999999999999",
                                     "9223372036854775808", "%2B1", "1.0", "%D9%A1", "abc",
                                     "%201"])
def test_a_version_path_is_digits_only(
    servers: Servers, source: MemorySource, version: str
) -> None:
    server = servers(source)
    path = "/v2/models/mlp/versions/" + version
    for method, action, body in (("POST", "/infer", infer_body()), ("GET", "", None),
                                 ("GET", "/ready", None)):
        status, _, doc = call(server, method, path + action, body)
        assert status == 400, (version, action, status, doc)
        assert "version must be a positive integer" in doc["error"]


def test_a_percent_encoded_path_gets_the_same_answer_from_both_servers(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source)
    app = server.app

    async def asgi(raw_path: bytes | None, path: str) -> int:
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path,
                                 "headers": [], "client": ("127.0.0.1", 1)}
        if raw_path is not None:
            scope["raw_path"] = raw_path
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    loop = server._loop
    assert loop is not None
    for target, decoded in ((b"/v2/health/%6Cive", "/v2/health/live"),
                            (b"/v2/models/ml%70", "/v2/models/mlp"),
                            (b"/v2/models/mlp%2Fx", "/v2/models/mlp/x"),
                            (b"/v2/health/%FF", "/v2/health/\udcff")):
        built_in = statuses(raw(server, b"GET " + target + b" HTTP/1.1\r\nConnection: close"
                                b"\r\n\r\n"))
        under_asgi = asyncio.run_coroutine_threadsafe(asgi(target, decoded), loop).result(10)
        assert built_in == [under_asgi], (target, built_in, under_asgi)
    assert call(server, "GET", "/v2/health/%6Cive")[0] == 200
    assert call(server, "GET", "/v2/models/mlp%2Fx")[0] == 404  # one segment, no such model
    assert call(server, "GET", "/v2/health/%FF")[0] == 400  # not UTF-8


# ---- strict tensor typing ---------------------------------------------------------------


@pytest.fixture
def typed(source: MemorySource) -> MemorySource:
    source.add("text", 1, text_model())
    source.promote("text", 1)
    return source


@pytest.mark.parametrize("model, datatype, shape, data, words", [
    ("mlp", "FP32", [1, 32], [0.5] * 31 + [None], "element 31 is null"),
    ("mlp", "FP32", [1, 32], [True] + [0.5] * 31, "element 0 is a boolean"),
    ("mlp", "FP32", [1, 32], [0.5] * 5 + ["1"] + [0.5] * 26, "element 5 is a string"),
    ("mlp", "FP32", [1, 32], [[0.5] * 16, [0.5] * 15 + [{}]], "element 31 is an object"),
    ("text", "BYTES", [2, 1], ["a", None], "element 1 is null"),
    ("text", "BYTES", [2, 1], [3, "a"], "element 0 is an integer"),
    ("text", "BYTES", [1, 1], [{"a": 1}], "element 0 is an object"),
    ("text", "BYTES", [1, 1], ["\ud800"], "element 0 is not valid Unicode"),
])
def test_each_datatype_takes_only_its_json_type(
    servers: Servers, typed: MemorySource, model: str, datatype: str, shape: list[int],
    data: list[Any], words: str,
) -> None:
    server = servers(typed)
    name = "x" if model == "mlp" else "s"
    body = json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                                   "data": data}]}).encode()
    status, _, doc = call(server, "POST", f"/v2/models/{model}/infer", body)
    assert status == 400, doc
    assert f"input '{name}'" in doc["error"] and words in doc["error"], doc
    status, _, doc = call(server, "POST", "/v2/models/text/infer", {"inputs": [
        {"name": "s", "shape": [2, 1], "datatype": "BYTES", "data": ["a", "é"]}]})
    assert status == 200 and doc["outputs"][0]["data"] == ["a", "é"], doc


def test_integer_types_refuse_fractions_booleans_and_overflow(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source)
    for b, words in ((1.5, "element 0 is a number"), (True, "element 0 is a boolean"),
                     (2**63, "out of the range of INT64")):
        status, _, doc = call(server, "POST", "/v2/models/two/infer", {"inputs": [
            {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
            {"name": "b", "shape": [1, 1], "datatype": "INT64", "data": [b]}]})
        assert status == 400 and "input 'b'" in doc["error"] and words in doc["error"], doc


def test_binary_bytes_that_are_not_utf8_get_400_naming_the_input(
    servers: Servers, typed: MemorySource
) -> None:
    server = servers(typed)
    for element in (b"\xff\xfe", b"\xed\xa0\x80"):  # not UTF-8; an encoded lone surrogate
        blob = struct.pack("<I", len(element)) + element
        header = json.dumps({"inputs": [{"name": "s", "shape": [1, 1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(blob)}}]}
                            ).encode()
        status, _, doc = call(server, "POST", "/v2/models/text/infer", header + blob,
                              {"Inference-Header-Content-Length": str(len(header)),
                               "Content-Type": "application/octet-stream"})
        assert status == 400 and "input 's'" in doc["error"] and "UTF-8" in doc["error"], doc
    _, _, text = call(server, "GET", "/metrics")
    assert "BACKEND" not in text.decode()


# ---- the version path serves only versions that passed promotion ------------------------


def test_an_unsigned_version_is_not_served_by_version(
    servers: Servers, source: MemorySource
) -> None:
    source.add("mlp", 3, mlp(3), signed=False)
    source.add("hand", 1, mlp(1), signed=False)
    source.promote("hand", 1)  # an alias moved by hand
    server = servers(source)
    for path in ("/v2/models/mlp/versions/3/infer", "/v2/models/hand/versions/1/infer"):
        status, _, doc = call(server, "POST", path, infer_body())
        assert status == 404 and "never passed promotion" in doc["error"], doc
    for path in ("/v2/models/mlp/versions/3", "/v2/models/mlp/versions/3/ready"):
        status, _, doc = call(server, "GET", path)
        assert status == 404 and "never passed promotion" in doc["error"], doc
    assert call(server, "POST", "/v2/models/hand/infer", infer_body())[0] == 200
    status, _, doc = call(server, "POST", "/v2/models/mlp/versions/2/infer", infer_body())
    assert status == 200 and doc["model_version"] == "2"


def test_the_registry_serves_by_version_only_what_was_promoted(tmp_path: Path) -> None:
    sizes = (32, 8, 2)
    home = imported_home(tmp_path / "home", {1: mlp(1, sizes=sizes), 2: mlp(2, sizes=sizes)})
    db = home.db()
    try:
        promotion.set_policy(db, "mlp", MINIMAL_POLICY, actor="root")
    finally:
        db.close()
    promotion.promote(home, "mlp@1", ADMIN)
    server, _, _ = registry_server(home)
    try:
        x = np.ones((1, 32), np.float32)
        status, _, doc = call(server, "POST", "/v2/models/mlp/versions/2/infer", infer_body(x))
        assert status == 404 and "never passed promotion" in doc["error"], doc
        status, _, doc = call(server, "POST", "/v2/models/mlp/versions/1/infer", infer_body(x))
        assert status == 200 and doc["model_version"] == "1", doc
        db = home.db()
        try:  # by hand, around the gates: the alias path serves it, the version path not
            registry.set_alias(db, "mlp", 2, "production", actor="root")
        finally:
            db.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x))
            if doc.get("model_version") == "2":
                break
            time.sleep(0.05)
        assert doc["model_version"] == "2"
        status, _, doc = call(server, "POST", "/v2/models/mlp/versions/2/infer", infer_body(x))
        assert status == 404 and "never passed promotion" in doc["error"], doc
    finally:
        server.stop()


# ---- timeouts and limits ----------------------------------------------------------------


SHORT = Limits(header_timeout_s=0.3, keepalive_timeout_s=0.3, max_connections=1000,
               max_header_count=20, max_header_bytes=2048)


def test_slow_and_idle_connections_are_closed(servers: Servers, source: MemorySource) -> None:
    server = servers(source, limits=SHORT)
    # half-sent headers, then nothing
    out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: a\r\n")
    assert statuses(out) == [408] and not out.endswith(b"<timeout>"), out
    # a body that stops halfway
    out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    assert statuses(out) == [408], out
    # connected, never a byte
    assert raw(server, b"") == b""
    # idle after an answer: closed quietly
    out = raw(server, b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n")
    assert statuses(out) == [200] and not out.endswith(b"<timeout>"), out
    assert server.state is not None and server.state.timed_out >= 4


def test_header_count_and_size_limits(servers: Servers, source: MemorySource) -> None:
    server = servers(source, limits=SHORT)
    many = b"".join(b"X-%d: a\r\n" % i for i in range(21))
    out = raw(server, b"GET /v2/health/live HTTP/1.1\r\n" + many + b"\r\n")
    assert statuses(out) == [431] and b"header lines" in out, out
    out = raw(server, b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
    assert statuses(out) == [431], out
    out = raw(server, b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 4000)  # unfinished
    assert statuses(out) == [431], out
    assert call(server, "GET", "/v2/health/live")[0] == 200


def test_past_the_connection_cap_a_client_gets_503(
    servers: Servers, source: MemorySource
) -> None:
    cap = Limits(header_timeout_s=30, keepalive_timeout_s=30, max_connections=5)
    server = servers(source, limits=cap)
    held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(5)]
    try:
        assert server.state is not None
        deadline = time.monotonic() + 10
        while len(server.state.connections) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        out = raw(server, b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        assert statuses(out) == [503] and b"retry-after: 1" in out.lower(), out
        assert server.state.refused == 1
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 10
    while len(server.state.connections) > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call(server, "GET", "/v2/health/live")[0] == 200


def test_the_cap_is_fitted_to_the_open_file_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fitted = Limits(max_connections=10**6).fitted()
    if soft == resource.RLIM_INFINITY:
        assert fitted.max_connections == 10**6
    else:
        assert fitted.max_connections == max(1, soft - 64)
    assert Limits(max_connections=3).fitted().max_connections == 3


def test_accept_failures_are_logged_once_per_interval(
    servers: Servers, source: MemorySource, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    server = servers(source)
    loop, state = server._loop, server.state
    assert loop is not None and state is not None

    def storm() -> None:
        for _ in range(1000):  # what asyncio's accept loop reports when descriptors run out
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(errno.EMFILE, "Too many open files")})

    with caplog.at_level(logging.ERROR, logger="appliance.serving"):
        asyncio.run_coroutine_threadsafe(asyncio.to_thread(lambda: None), loop).result(10)
        loop.call_soon_threadsafe(storm)
        deadline = time.monotonic() + 10
        while state.accept_errors < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert state.accept_errors == 1000
    lines = [r for r in caplog.records if "accept() failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert call(server, "GET", "/v2/health/live")[0] == 200


def test_a_client_is_served_while_hundreds_of_idle_connections_are_open(
    servers: Servers, source: MemorySource
) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Both ends live in this process: two descriptors a connection, and room to spare.
    idle = min(400, (soft - 200) // 2) if soft != resource.RLIM_INFINITY else 400
    assert idle >= 100, f"the open-file limit ({soft}) is too low for this test"
    server = servers(source, limits=Limits(header_timeout_s=60, keepalive_timeout_s=60))
    held = []
    try:
        for i in range(idle):
            conn = socket.create_connection((server.host, server.port), timeout=10)
            if i % 2:
                conn.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Le")  # half-sent
            held.append(conn)
        assert server.state is not None
        deadline = time.monotonic() + 20
        while len(server.state.connections) < idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.state.connections) == idle
        for _ in range(20):
            status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body())
            assert status == 200
        np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(1, 2),
                                   mlp_numpy(X1), rtol=1e-4, atol=1e-5)
    finally:
        for conn in held:
            conn.close()


# ---- Triton's statistics, model configuration and repository index ----------------------


def test_tritonclient_statistics_configuration_and_index(
    servers: Servers, source: MemorySource
) -> None:
    import tritonclient.http as triton

    server = servers(source)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        x = np.ones((3, 32), dtype=np.float32)
        for _ in range(4):
            inp = triton.InferInput("x", [3, 32], "FP32")
            inp.set_data_from_numpy(x)
            client.infer("mlp", [inp])
        inp = triton.InferInput("x", [1, 32], "FP32")
        inp.set_data_from_numpy(x[:1])
        client.infer("mlp", [inp], model_version="2")
        with pytest.raises(triton.InferenceServerException):
            bad = triton.InferInput("x", [1, 31], "FP32")
            bad.set_data_from_numpy(np.ones((1, 31), np.float32))
            client.infer("mlp", [bad])

        stats = client.get_inference_statistics("mlp")["model_stats"]
        by_version = {s["version"]: s for s in stats}
        one = by_version["1"]
        assert one["name"] == "mlp"
        assert one["inference_count"] == 12
        assert 1 <= one["execution_count"] <= 4
        inference = one["inference_stats"]
        assert inference["success"]["count"] == 4 and inference["success"]["ns"] > 0
        assert inference["fail"]["count"] == 1
        assert inference["queue"]["count"] == 4
        assert inference["compute_infer"]["count"] == 4 and inference["compute_infer"]["ns"] > 0
        assert sum(b["compute_infer"]["count"] for b in one["batch_stats"]) == \
            one["execution_count"]
        assert one["last_inference"] > 0
        assert by_version["2"]["inference_count"] == 1
        only_two = client.get_inference_statistics("mlp", "2")["model_stats"]
        assert [s["version"] for s in only_two] == ["2"]
        every = client.get_inference_statistics()["model_stats"]
        assert {(s["name"], s["version"]) for s in every} >= {("mlp", "1"), ("mlp", "2"),
                                                               ("two", "1")}

        config = client.get_model_config("mlp")
        assert config["name"] == "mlp" and config["platform"] == "onnxruntime_onnx"
        assert config["max_batch_size"] == 256
        assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32",
                                    "format": "FORMAT_NONE", "dims": [32]}]
        assert config["output"][0]["dims"] == [2]
        assert client.get_model_config("mlp", "2")["version_policy"] == {
            "specific": {"versions": [2]}}

        index = client.get_model_repository_index()
        assert {(m["name"], m["version"], m["state"]) for m in index} >= {
            ("mlp", "1", "READY"), ("mlp", "2", "READY"), ("two", "1", "READY")}
        client.load_model("mlp")  # served already
        with pytest.raises(triton.InferenceServerException, match="alias"):
            client.unload_model("mlp")
        assert client.get_server_metadata()["extensions"][:1] == ["binary_tensor_data"]
        # the rest of the client: settings in force, and no shared memory
        assert client.get_log_settings()["log_error"] is True
        with pytest.raises(triton.InferenceServerException, match="configuration file"):
            client.update_log_settings({"log_verbose_level": 1})
        assert client.get_trace_settings()["trace_level"] == ["OFF"]
        assert client.get_trace_settings("mlp")["trace_level"] == ["OFF"]
        with pytest.raises(triton.InferenceServerException, match="not offered"):
            client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
        assert client.get_system_shared_memory_status() == []
        assert client.get_cuda_shared_memory_status() == []
        with pytest.raises(triton.InferenceServerException, match="not offered"):
            client.register_system_shared_memory("r", "/r", 64)
        client.unregister_system_shared_memory()
        client.unregister_cuda_shared_memory()
    finally:
        client.close()
    assert call(server, "GET", "/v2/models/nope/stats")[0] == 404


# ---- a bounded fuzz ---------------------------------------------------------------------


def _seeds() -> list[bytes]:
    body = json.dumps(infer_body(id="fuzz")).encode()
    blob = X1.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
                        ).encode()
    binary = header + blob
    return [
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: a\r\nInference-Header-Content-Length: %d"
        b"\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (len(header), len(binary), binary),
        b"GET /v2/models/mlp/versions/1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /v2/repository/index HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    ]


_TOKENS = [b"\r\n", b"\n", b" ", b":", b"\x00", b"\xff", b"\\ud800", b"null", b"true", b"\"",
           b"[", b"]", b"{", b"}", b"-1", b"99999999999999999999999", b"1e999", b"%", b"%2F",
           b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n", b"HTTP/1.0", b","]


def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        pos = int(rng.integers(0, len(out) + 1))
        if kind == 0 and out:  # flip a byte
            out[min(pos, len(out) - 1)] = int(rng.integers(0, 256))
        elif kind == 1:  # insert a token
            out[pos:pos] = _TOKENS[int(rng.integers(0, len(_TOKENS)))]
        elif kind == 2:  # delete a run
            del out[pos:pos + int(rng.integers(1, 16))]
        elif kind == 3:  # truncate
            del out[pos:]
        elif kind == 4:  # duplicate a run
            end = min(len(out), pos + int(rng.integers(1, 64)))
            out[pos:pos] = out[pos:end]
        else:  # replace a digit run's neighbour with a large number
            out[pos:pos] = str(int(rng.integers(0, 2**62))).encode()
    return bytes(out)


@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_no_hang_and_the_server_lives(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source, limits=Limits(header_timeout_s=2, keepalive_timeout_s=2))
    rng = np.random.default_rng(20240917)
    seeds = _seeds()
    seen: dict[int, int] = {}
    for i in range(3000):
        data = _mutate(rng, seeds[i % len(seeds)])
        with socket.create_connection((server.host, server.port), timeout=10) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # all it will send: the server answers, then closes
            out = b""
            try:
                while chunk := conn.recv(65536):
                    out += chunk
            except TimeoutError:
                pytest.fail(f"mutation {i} hung the connection: {data!r}")
            except ConnectionResetError:
                pass  # refused before it read all that was sent: answered or not, no hang
        for status in statuses(out):
            seen[status] = seen.get(status, 0) + 1
            assert status < 500 or status == 505, (i, data, out)
    assert seen.get(200, 0) > 30 and seen.get(400, 0) > 1000, seen
    assert call(server, "POST", "/v2/models/mlp/infer", infer_body())[0] == 200


def test_the_asgi_entry_shares_the_adapter(source: MemorySource) -> None:
    """Body limits and the 500 of a bug come from one place under ASGI too."""

    async def scenario() -> list[int]:
        engine = Engine(source, __import__("helpers.serving", fromlist=["FAST"]).FAST,
                        providers=("CPUExecutionProvider",))

        def broken(req: object) -> None:
            raise RuntimeError("a bug")

        app = ServingApp(engine, authorizer=loopback_authorizer(True), max_body_bytes=2048)
        bug = ServingApp(engine, authorizer=broken, max_body_bytes=2048)  # type: ignore[arg-type]
        got = []
        try:
            for target, body in ((app, b" " * 4096), (bug, b"")):
                sent: list[dict[str, Any]] = []
                chunks = [body[:1024], body[1024:]]

                async def receive(chunks: list[bytes] = chunks) -> dict[str, Any]:
                    part = chunks.pop(0) if chunks else b""
                    return {"type": "http.request", "body": part, "more_body": bool(chunks)}

                async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent
                               ) -> None:
                    sent.append(message)

                await target({"type": "http", "method": "GET", "path": "/v2/models/mlp",
                              "raw_path": b"/v2/models/mlp", "headers": [],
                              "client": ("127.0.0.1", 1)}, receive, send)
                got.append(int(sent[0]["status"]))
        finally:
            await app.shutdown()
        return got

    assert asyncio.run(scenario()) == [413, 500]


EMFILE_CHILD = r"""
import logging, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
from helpers.serving import MemorySource, mlp
from appliance.serving.engine import Engine, EngineSettings
from appliance.serving.http import Limits, ServerThread, ServingApp, loopback_authorizer

logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
source = MemorySource()
source.add("mlp", 1, mlp(1))
source.promote("mlp", 1)
engine = Engine(source, EngineSettings(intra_op_threads=1, log_rows_per_second=0),
                providers=("CPUExecutionProvider",))
app = ServingApp(engine, authorizer=loopback_authorizer(True), max_body_bytes=1 << 20)
server = ServerThread(app, limits=Limits(header_timeout_s=30, keepalive_timeout_s=30)).start()
filler = []
try:
    while True:
        filler.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for fd in filler[-2:]:  # room for two connections, no more
    os.close(fd)
del filler[-2:]
print(server.port, flush=True)
sys.stdin.readline()  # the parent's clients are connected, and accept() fails for some
deadline = time.monotonic() + 30
while server.state.accept_errors < 3 and time.monotonic() < deadline:
    time.sleep(0.05)  # asyncio retries a failed accept() each second
for fd in filler:
    os.close(fd)
print(server.state.accept_errors, flush=True)
sys.stdin.readline()
server.stop()
"""


def test_descriptors_running_out_is_logged_once_and_the_server_recovers(
    tmp_path: Path
) -> None:
    import subprocess
    import sys

    tests_dir = str(Path(__file__).resolve().parents[1])
    child = subprocess.Popen([sys.executable, "-c", EMFILE_CHILD, tests_dir],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    held = []
    log_text = ""
    try:
        port = int(child.stdout.readline())
        for _ in range(30):  # more than the server has descriptors for: accept() fails
            held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        child.stdin.write("go\n")
        child.stdin.flush()
        failures = int(child.stdout.readline())
        for conn in held:
            conn.close()
        held.clear()
        server = type("S", (), {"host": "127.0.0.1", "port": port})()
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and status != 200:
            try:
                status = call(server, "POST", "/v2/models/mlp/infer", infer_body())[0]  # type: ignore[arg-type]
            except OSError:
                time.sleep(0.1)
        assert status == 200
        log_text = child.communicate("stop\n", timeout=30)[1]
    finally:
        for conn in held:
            conn.close()
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert failures >= 3, log_text
    assert log_text.count("accept() failed") == 1, log_text
    assert "out of system resource" not in log_text, log_text
