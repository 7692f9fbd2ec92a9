"""The V2 REST endpoints of a real daemon on loopback: answers, errors, metrics, request log."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
from helpers.serving import FAST, MemorySource, Servers, call, mlp_numpy, raw

from appliance.errors import Unauthorized
from appliance.serving.engine import Engine
from appliance.serving.http import (
    AuthRequest,
    BusyPoll,
    ServingApp,
    loopback_authorizer,
    token_authorizer,
)
from appliance.storage.home import Home


def x_rows(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 32)).astype(np.float32)


def infer_body(x: np.ndarray, **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


def test_health_server_and_model_metadata(servers: Servers, source: MemorySource) -> None:
    server = servers(source)
    assert call(server, "GET", "/v2/health/live")[0] == 200
    assert call(server, "GET", "/v2/health/ready")[:3:2] == (200, {"ready": True})
    status, _, meta = call(server, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in meta["extensions"]
    status, _, meta = call(server, "GET", "/v2/models/two")
    assert status == 200
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "a", "datatype": "FP32", "shape": [-1, 3]},
                              {"name": "b", "datatype": "INT64", "shape": [-1, 1]}]
    assert meta["outputs"][1] == {"name": "flag", "datatype": "BOOL", "shape": [-1, 1]}
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert call(server, "GET", "/v2/models/mlp/versions/2")[2]["parameters"]["version"] == "2"
    assert call(server, "GET", "/v2/models/mlp/ready")[:3:2] == (200, {"name": "mlp",
                                                                        "ready": True})


def test_infer_json_nested_and_flat_with_id_and_output_selection(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source)
    x = x_rows(3)
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x, id="req-7"))
    assert status == 200, doc
    assert doc["id"] == "req-7" and doc["model_name"] == "mlp" and doc["model_version"] == "1"
    out = doc["outputs"][0]
    assert out["name"] == "y" and out["datatype"] == "FP32" and out["shape"] == [3, 2]
    np.testing.assert_allclose(np.array(out["data"]).reshape(3, 2), mlp_numpy(x, 1), atol=1e-4)

    nested = {"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
        {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[10], [-1]]}],
        "outputs": [{"name": "flag"}]}
    status, _, doc = call(server, "POST", "/v2/models/two/infer", nested)
    assert status == 200, doc
    assert [o["name"] for o in doc["outputs"]] == ["flag"]
    assert doc["outputs"][0]["data"] == [True, False]

    status, _, doc = call(server, "POST", "/v2/models/mlp/versions/2/infer", infer_body(x))
    assert status == 200 and doc["model_version"] == "2"
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(3, 2),
                               mlp_numpy(x, 2), atol=1e-4)


def test_binary_tensor_extension_over_http(servers: Servers, source: MemorySource) -> None:
    server = servers(source)
    x = x_rows(4)
    header = json.dumps({"inputs": [{"name": "x", "shape": [4, 32], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    status, hdrs, raw = call(
        server, "POST", "/v2/models/mlp/infer", header + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(header)),
         "Content-Type": "application/octet-stream"})
    assert status == 200
    n = int(hdrs["inference-header-content-length"])
    doc = json.loads(raw[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 4 * 2 * 4
    y = np.frombuffer(raw[n:], dtype="<f4").reshape(4, 2)
    np.testing.assert_allclose(y, mlp_numpy(x, 1), atol=1e-4)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": [{"name": "q", "shape": [1, 32], "datatype": "FP32", "data": [0] * 32}]},
         "unknown input 'q'"),
        ({"inputs": [{"name": "x", "shape": [1, 31], "datatype": "FP32", "data": [0] * 31}]},
         "input 'x': shape [1, 31]"),
        ({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "INT32", "data": [0] * 32}]},
         "input 'x': datatype"),
        (b"{not json", "not valid JSON"),
        ({"id": "no-inputs"}, "inputs"),
    ],
)
def test_bad_requests_get_400_naming_the_input(
    servers: Servers, source: MemorySource, body: object, words: str
) -> None:
    server = servers(source)
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", body)
    assert status == 400
    assert words in doc["error"]
    # The server is undisturbed.
    assert call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(1)))[0] == 200


def test_missing_input_unknown_model_version_and_limits(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source, max_batch_size=8, max_body_bytes=4096)
    status, _, doc = call(server, "POST", "/v2/models/two/infer", {"inputs": [
        {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 400 and "missing input 'b'" in doc["error"]
    status, _, doc = call(server, "POST", "/v2/models/nope/infer", infer_body(x_rows(1)))
    assert status == 404 and "nope" in doc["error"]
    assert call(server, "GET", "/v2/models/nope")[0] == 404
    status, _, doc = call(server, "POST", "/v2/models/mlp/versions/9/infer", infer_body(x_rows(1)))
    assert status == 404 and "9" in doc["error"]
    assert call(server, "GET", "/v2/models/mlp/versions/abc")[0] == 400
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(9)))
    assert status == 413 or (status == 400 and "limit of 8" in doc["error"])
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(9)[:, :4]
                                                                             .repeat(8, 1)))
    assert status in (400, 413)
    big = b"{" + b" " * 5000 + b"}"
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", big)
    assert status == 413 and "4096" in doc["error"]
    assert call(server, "GET", "/v2/models/mlp/infer")[0] == 405


def test_row_limit_is_a_400_naming_the_input(servers: Servers, source: MemorySource) -> None:
    server = servers(source, max_batch_size=2)
    status, _, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(3)))
    assert status == 400 and "input 'x'" in doc["error"] and "limit of 2" in doc["error"]


def test_overload_gets_503_with_retry_after(home: Home, source: MemorySource) -> None:
    from dataclasses import replace

    async def scenario() -> list[tuple[int, dict[bytes, bytes]]]:
        engine = Engine(source, replace(FAST, queue_capacity=1),
                        providers=("CPUExecutionProvider",))
        app = ServingApp(engine, authorizer=loopback_authorizer(True), max_body_bytes=1 << 20)
        await app.startup()
        # As the built-in server counts them: 20 requests read and not yet answered, so
        # none runs alone and each must find room in a queue of one.
        app.in_flight = 20
        try:
            body = json.dumps(infer_body(x_rows(1))).encode()
            results = await asyncio.gather(*[
                app.handle("POST", "/v2/models/mlp/infer", {}, body, "127.0.0.1")
                for _ in range(20)])
        finally:
            await app.shutdown()
        return [(status, dict(headers)) for status, headers, _ in results]

    results = asyncio.run(scenario())
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 1 and statuses.count(503) == 19
    assert all(h[b"retry-after"] == b"1" for s, h in results if s == 503)


def test_metrics_use_triton_names(servers: Servers, source: MemorySource) -> None:
    server = servers(source)
    for _ in range(3):
        assert call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(2)))[0] == 200
    call(server, "POST", "/v2/models/mlp/infer", b"{bad")
    status, hdrs, raw = call(server, "GET", "/metrics")
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    text = raw.decode()
    assert 'nv_inference_request_success{model="mlp",version="1"} 3' in text
    assert 'nv_inference_request_failure{model="mlp",version="1",reason="OTHER"} 1' in text
    assert 'nv_inference_count{model="mlp",version="1"} 6' in text
    assert 'nv_inference_exec_count{model="mlp",version="1"}' in text
    for name in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                 "nv_inference_compute_infer_duration_us", "nv_inference_pending_request_count"):
        assert f'{name}{{model="mlp",version="1"}}' in text
    assert ('appliance_inference_request_duration_seconds_count{model="mlp",version="1"} 4'
            in text)
    assert 'appliance_model_loaded{model="mlp",version="1",provider="CPUExecutionProvider"} 1' \
        in text


def test_request_log_rows_reach_monitoring_db(
    servers: Servers, source: MemorySource, home: Home
) -> None:
    server = servers(source)
    for i in range(5):
        body = infer_body(x_rows(1, seed=i), id=f"log-{i}")
        assert call(server, "POST", "/v2/models/mlp/infer", body)[0] == 200
    call(server, "POST", "/v2/models/mlp/infer", {"id": "bad", "inputs": [
        {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    db = home.monitoring_db()
    try:
        deadline = time.monotonic() + 10
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = list(db.query("SELECT * FROM requests ORDER BY id"))
            if len(rows) >= 6:
                break
            time.sleep(0.05)
        plan = " ".join(r["detail"] for r in db.query(
            "EXPLAIN QUERY PLAN SELECT minute, COUNT(*) FROM requests"
            " WHERE model = 'mlp' AND version = 1 AND minute >= 0 GROUP BY minute"))
    finally:
        db.close()
    assert len(rows) == 6
    ok = [r for r in rows if r["status"] == 200]
    assert [r["request_id"] for r in ok] == [f"log-{i}" for i in range(5)]
    assert all(r["model"] == "mlp" and r["version"] == 1 and r["rows"] == 1 for r in ok)
    assert all(r["batch_size"] >= 1 and r["latency_us"] > 0 for r in ok)
    assert json.loads(str(ok[0]["inputs"]))["x"][0] == pytest.approx(
        x_rows(1, seed=0)[0].tolist(), abs=1e-6)
    assert len(json.loads(str(ok[0]["outputs"]))["y"][0]) == 2
    bad = [r for r in rows if r["status"] == 400]
    assert len(bad) == 1 and "input 'x'" in str(bad[0]["error"])
    assert "requests_model_minute" in plan


def test_default_authorizer_only_lets_loopback_in_anonymously() -> None:
    allow = loopback_authorizer(True)
    deny = loopback_authorizer(False)
    req = AuthRequest("127.0.0.1", {}, "/v2/models/m/infer", "infer", "m")
    allow(req)
    allow(AuthRequest("::1", {}, "/", "infer", "m"))
    allow(AuthRequest("::ffff:127.0.0.1", {}, "/", "infer", "m"))
    with pytest.raises(Unauthorized, match="'infer' scope"):
        allow(AuthRequest("10.1.2.3", {}, "/", "infer", "m"))
    # addresses that merely start like loopback ones are not loopback
    for client in ("::102:304", "::1:0:0:1", "::ffff:10.0.0.1", "127.example", None):
        with pytest.raises(Unauthorized):
            allow(AuthRequest(client, {}, "/", "infer", "m"))
    with pytest.raises(Unauthorized):
        deny(req)


def test_default_authorizer_takes_api_tokens_with_the_infer_scope(
    servers: Servers, source: MemorySource, home: Home
) -> None:
    from appliance.auth.tokens import create_token, revoke_token
    from appliance.auth.users import add_user
    from appliance.errors import Forbidden

    db = home.db()
    try:
        add_user(db, "client", "viewer", "a long enough password", actor="test")
        infer = create_token(db, "client", "svc", ["infer"], actor="test")
        read = create_token(db, "client", "dash", ["read"], actor="test")
    finally:
        db.close()
    authorize = token_authorizer(home, anonymous_loopback=False)

    def req(token: str | None, client: str = "10.1.2.3") -> AuthRequest:
        headers = {b"authorization": f"Bearer {token}".encode()} if token else {}
        return AuthRequest(client, headers, "/v2/models/m/infer", "infer", "m")

    authorize(req(infer.token))
    with pytest.raises(Unauthorized, match="'infer' scope"):
        authorize(req(None))
    with pytest.raises(Unauthorized, match="unknown API token"):
        authorize(req("apl_not-a-token"))
    with pytest.raises(Forbidden, match="needs infer"):
        authorize(req(read.token))
    with pytest.raises(Unauthorized, match="Bearer TOKEN"):
        authorize(AuthRequest("10.1.2.3", {b"authorization": b"Basic abc"}, "/", "infer", "m"))
    token_authorizer(home, anonymous_loopback=True)(req(None, client="127.0.0.1"))
    with pytest.raises(Unauthorized):  # a token that is sent is checked, from loopback too
        token_authorizer(home, anonymous_loopback=True)(req("apl_bad", client="127.0.0.1"))

    server = servers(source, authorizer=authorize)
    body = infer_body(x_rows(1))
    assert call(server, "POST", "/v2/models/mlp/infer", body)[0] == 401
    assert call(server, "POST", "/v2/models/mlp/infer", body,
                {"Authorization": f"Bearer {infer.token}"})[0] == 200
    assert call(server, "POST", "/v2/models/mlp/infer", body,
                {"Authorization": f"Bearer {read.token}"})[0] == 403
    db = home.db()
    try:
        revoke_token(db, infer.id, actor="test")
    finally:
        db.close()
    assert call(server, "POST", "/v2/models/mlp/infer", body,
                {"Authorization": f"Bearer {infer.token}"})[0] == 401


def test_malformed_bodies_and_lengths_get_400_not_a_hang(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source)
    deep = b"[" * 100_000 + b"]" * 100_000
    out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(deep), deep))
    assert out.startswith(b"HTTP/1.1 400 ") and b"nested too deeply" in out
    # a negative length must not make the server read the rest as a second request
    for length in (b"-3", b"+3", b"1_0", b" "):
        out = raw(server, b"POST /v2/models/mlp/infer HTTP/1.1\r\nContent-Length: "
                   + length + b"\r\n\r\nGET /v2 HTTP/1.1\r\n\r\n")
        assert out.count(b"HTTP/1.1 ") == 1 and out.startswith(b"HTTP/1.1 400 "), out
        assert b"Content-Length" in out, out


def test_expect_100_continue_and_header_case_and_spacing(
    servers: Servers, source: MemorySource
) -> None:
    server = servers(source)
    x = x_rows(2)
    body = json.dumps(infer_body(x)).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as conn:
        conn.sendall(b"POST /v2/models/mlp/infer?x=1 HTTP/1.1\r\nHost: t\r\n"
                     b"EXPECT:  100-continue \r\ncontent-LENGTH:%d\r\n\r\n" % len(body))
        assert conn.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        conn.sendall(body + b"GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
    first, second = out.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and second.startswith(b"200 ")
    doc = json.loads(first.split(b"\r\n\r\n", 1)[1])
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(2, 2),
                               mlp_numpy(x), rtol=1e-4, atol=1e-5)
    assert b'{"live":true}' in second


def test_an_unexpected_error_gets_500_not_a_hang(servers: Servers, source: MemorySource) -> None:
    def broken(req: AuthRequest) -> None:
        raise RuntimeError("a bug")

    server = servers(source, authorizer=broken)
    out = raw(server, b"GET /v2/models/mlp HTTP/1.1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500 ") and b"internal error" in out, out


def test_custom_authorizer_is_called_and_refusal_is_401(
    servers: Servers, source: MemorySource
) -> None:
    seen: list[AuthRequest] = []

    def authorizer(req: AuthRequest) -> None:
        seen.append(req)
        if req.headers.get(b"authorization") != b"Bearer good":
            raise Unauthorized("a bearer token with the 'infer' scope is required")

    server = servers(source, authorizer=authorizer)
    status, hdrs, doc = call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(1)))
    assert status == 401 and "infer" in doc["error"] and "bearer" in hdrs["www-authenticate"].lower()
    status, _, _ = call(server, "POST", "/v2/models/mlp/infer", infer_body(x_rows(1)),
                        {"Authorization": "Bearer good"})
    assert status == 200
    assert seen[-1].model == "mlp" and seen[-1].scope == "infer"
    assert call(server, "GET", "/v2/health/ready")[0] == 200  # health needs no token


def test_a_busy_connection_stops_reading_past_its_limit() -> None:
    import asyncio
    import types

    from appliance.serving.http import Connection, Limits
    from appliance.serving.http.transport import ServerState

    class Transport:
        def __init__(self) -> None:
            self.paused = 0
            self.resumed = 0
            self.written = b""

        def pause_reading(self) -> None:
            self.paused += 1

        def resume_reading(self) -> None:
            self.resumed += 1

        def write(self, data: bytes) -> None:
            self.written += data

        def close(self) -> None:
            pass

    async def answer() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, [], b"{}"

    def answered(*request: object) -> object:
        return answer()

    async def scenario() -> tuple[Transport, Connection]:
        app = types.SimpleNamespace(max_body_bytes=1000, in_flight=1, request=answered)
        state = ServerState(app, types.SimpleNamespace(touch=lambda: None),  # type: ignore[arg-type]
                            Limits(max_header_bytes=1024))
        conn = Connection(state)
        transport = Transport()
        conn.transport = transport  # type: ignore[assignment]
        conn.busy = True  # a request is being answered
        conn.data_received(b"x" * 1500)
        assert transport.paused == 0  # within the limit: keep reading
        conn.data_received(b"x" * 1000)
        assert transport.paused == 1 and conn.paused
        conn.data_received(b"x" * 10)
        assert transport.paused == 1  # paused once, not again
        conn.held.clear()
        conn.busy = False
        await conn._answer("POST", answer(), keep=True)
        return transport, conn

    transport, conn = asyncio.run(scenario())
    assert transport.resumed == 1 and not conn.paused
    assert transport.written.startswith(b"HTTP/1.1 200")


def test_busy_poll_keeps_the_loop_polling_for_its_window_then_lets_it_sleep() -> None:
    class Counting:
        """The event loop, counting the callbacks the poll queues on it."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop
            self.queued = 0

        def call_soon(self, callback: Callable[[], None]) -> asyncio.Handle:
            self.queued += 1
            return self.loop.call_soon(callback)

    async def run(window_us: int) -> tuple[bool, float, int, int]:
        loop = Counting(asyncio.get_running_loop())
        poll = BusyPoll(loop, window_us)  # type: ignore[arg-type]
        started = time.perf_counter()  # before touch(), so the window cannot look shorter
        poll.touch()
        active_at_start = poll.active
        while poll.active and time.perf_counter() - started < 5:
            await asyncio.sleep(0)
        spun = time.perf_counter() - started
        queued = loop.queued
        await asyncio.sleep(0.05)  # idle now
        return active_at_start, spun, queued, loop.queued - queued

    at_start, spun, queued, later = asyncio.run(run(20_000))
    assert at_start and 0.02 <= spun < 1.0  # it polled for its window, then stopped
    assert queued > 10  # a turn of the loop after another
    assert later == 0  # and then left the loop to sleep
    at_start, spun, queued, later = asyncio.run(run(0))  # 0: off
    assert not at_start and queued == 0 and later == 0


def test_busy_poll_stops_while_a_batcher_thread_has_work() -> None:
    """A polling loop holds the GIL a batcher thread needs to start and end its run: while
    the engine counts jobs on threads, a touch polls one turn at most."""
    from appliance.serving.batcher import Tally

    async def run() -> tuple[int, bool, int]:
        loop = asyncio.get_running_loop()
        threads = Tally()
        poll = BusyPoll(loop, 5_000_000, threads)  # a window far longer than the test
        threads.n = 1  # a request went to a slow model's thread
        poll.touch()
        turns = 0
        while poll.active and turns < 1000:
            await asyncio.sleep(0)
            turns += 1
        threads.n = 0  # answered; the answer's write touches the poll again
        poll.touch()
        for _ in range(20):
            await asyncio.sleep(0)
        return turns, poll.active, threads.n

    turns, active_after, _ = asyncio.run(run())
    assert turns <= 2  # stopped at its first turn, not after its window
    assert active_after  # polling again once no thread has work


def test_busy_poll_window_comes_from_the_configuration(home: Home, source: MemorySource) -> None:
    from appliance.config import SETTINGS_BY_NAME, parse_config
    from appliance.serving.http import BUSY_POLL_US, create_app

    assert SETTINGS_BY_NAME["serving.busy_poll_us"].default == BUSY_POLL_US == 100
    for conf, want in (({}, 100), ({"serving": {"busy_poll_us": 0}}, 0)):
        app = create_app(parse_config(conf), home=home, source=source,
                         authorizer=loopback_authorizer(True))
        assert app.busy_poll_us == want


@pytest.mark.parametrize("freeze", [True, False])
def test_the_daemon_freezes_the_heap_start_up_left(home: Home, source: MemorySource,
                                                   freeze: bool) -> None:
    """With ``freeze`` (as the daemon's main runs it), what start-up left alive is out of the
    collector's sight once the server is ready, so a full collection while serving walks only
    what requests made; without it (tests, embedding) the process's heap is left alone."""
    import gc

    from appliance.serving.http import serve

    seen: dict[str, int] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        engine = Engine(source, FAST, providers=("CPUExecutionProvider",))
        app = ServingApp(engine, authorizer=loopback_authorizer(True), max_body_bytes=1 << 20)

        def ready(_port: int) -> None:
            seen["frozen"] = gc.get_freeze_count()
            seen["tracked"] = len(gc.get_objects())
            stop.set()

        await serve(app, "127.0.0.1", 0, stop=stop, on_ready=ready, freeze=freeze)

    assert gc.get_freeze_count() == 0
    try:
        asyncio.run(scenario())
    finally:
        gc.unfreeze()
    if freeze:
        assert seen["frozen"] > 10_000  # modules, the engine, the loaded model
        assert seen["tracked"] < seen["frozen"] // 10
    else:
        assert seen["frozen"] == 0
