"""Real ONNX models and an in-memory model source for the serving tests."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from appliance.errors import NotFound
from appliance.serving.engine import Engine, EngineSettings
from appliance.serving.http import (
    Authorizer,
    Limits,
    ServerThread,
    ServingApp,
    loopback_authorizer,
)
from appliance.serving.metrics import Metrics
from appliance.serving.requestlog import RequestLog
from appliance.serving.source import Resolved, Route
from appliance.storage.home import Home


def _finish(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def mlp(version: int = 1, sizes: tuple[int, ...] = (32, 256, 256, 2), seed: int = 0) -> bytes:
    """x FP32 [-1, 32] -> Gemm/Relu layers -> y FP32 [-1, 2], plus ``version`` on every output.

    The offset lets a test tell from the numbers which version answered.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = numpy_helper.from_array((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32), f"w{i}")
        bias = numpy_helper.from_array(np.zeros(b, dtype=np.float32), f"b{i}")
        inits += [w, bias]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [out + "r"]))
            out += "r"
        prev = out
    inits.append(numpy_helper.from_array(np.array([float(version)], dtype=np.float32), "ver"))
    nodes.append(helper.make_node("Add", [prev, "ver"], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    return _finish(graph)


def mlp_numpy(x: np.ndarray, version: int = 1, sizes: tuple[int, ...] = (32, 256, 256, 2),
              seed: int = 0) -> np.ndarray:
    """The same function as ``mlp`` in numpy, to check answers independently."""
    rng = np.random.default_rng(seed)
    h = x.astype(np.float32)
    layers = list(zip(sizes[:-1], sizes[1:], strict=True))
    for i, (a, b) in enumerate(layers):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        h = h @ w
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h + np.float32(version)


def two_io(version: int = 1) -> bytes:
    """Two inputs (a FP32 [-1, 3], b INT64 [-1, 1]) and two outputs (sum FP32, flag BOOL)."""
    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["s0"]),
        helper.make_node("Add", ["s0", "ver"], ["sum"]),
        helper.make_node("Greater", ["bf", "zero"], ["flag"]),
    ]
    graph = helper.make_graph(
        nodes, "two_io",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("b", TensorProto.INT64, ["n", 1])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n", 1])],
        [numpy_helper.from_array(np.array([float(version)], dtype=np.float32), "ver"),
         numpy_helper.from_array(np.array([0.0], dtype=np.float32), "zero")],
    )
    return _finish(graph)


def fails_on_run() -> bytes:
    """Loads, but every run fails: a Reshape to a shape no input can take."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["p", "q", "r"])],
        [numpy_helper.from_array(np.array([7, 5, 3], dtype=np.int64), "shape")],
    )
    return _finish(graph)


NOT_ONNX = b"this is not an ONNX model"


class MemorySource:
    """A model source held in memory: versions of ONNX bytes and a route per model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, dict[int, bytes]] = {}
        self._routes: dict[str, Route] = {}
        self._moves = 0
        self._unsigned: set[tuple[str, int]] = set()

    def add(self, name: str, version: int, data: bytes, signed: bool = True) -> None:
        """``signed=False``: a version that never passed promotion."""
        with self._lock:
            self._models.setdefault(name, {})[version] = data
            if signed:
                self._unsigned.discard((name, version))
            else:
                self._unsigned.add((name, version))

    def route(self, route: Route) -> None:
        with self._lock:
            self._routes[route.name] = route
            self._moves += 1

    def promote(self, name: str, version: int) -> None:
        self.route(Route(name=name, primary=version))

    def fingerprint(self) -> Hashable:
        with self._lock:
            return self._moves

    def list_served(self) -> dict[str, Route]:
        with self._lock:
            return dict(self._routes)

    def resolve(self, name: str, version: int | None) -> Resolved:
        with self._lock:
            if version is None:
                route = self._routes.get(name)
                if route is None:
                    raise NotFound(f"model {name} has no production alias")
                version = route.primary
            data = self._models.get(name, {}).get(version)
        if data is None:
            raise NotFound(f"model {name}@{version} does not exist")
        return Resolved(name=name, version=version, model=data,
                        signed=(name, version) not in self._unsigned)


def text_model(version: int = 1) -> bytes:
    """s BYTES [-1, 1] -> Identity -> t BYTES [-1, 1]: a model of string tensors."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])], "text",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n", 1])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["n", 1])],
    )
    return _finish(graph)


FAST = EngineSettings(poll_interval_s=0.05, intra_op_threads=1, log_rows_per_second=10**9)


class Servers:
    def __init__(self, home: Home) -> None:
        self.home = home
        self.running: list[ServerThread] = []

    def __call__(self, source: MemorySource, authorizer: Authorizer | None = None,
                 max_body_bytes: int = 1 << 20, limits: Limits | None = None,
                 **settings: Any) -> ServerThread:
        metrics = Metrics()
        engine = Engine(source, replace(FAST, **settings), metrics=metrics,
                        request_log=RequestLog(self.home.monitoring_db, metrics, 10_000,
                                               flush_interval=0.05))
        app = ServingApp(engine, authorizer=authorizer or loopback_authorizer(True),
                         max_body_bytes=max_body_bytes)
        server = ServerThread(app, limits=limits).start()
        self.running.append(server)
        return server


def call(server: ServerThread, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, data, headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if hdrs.get("content-type", "").startswith("application/json"):
            return resp.status, hdrs, json.loads(raw)
        return resp.status, hdrs, raw
    finally:
        conn.close()


def raw(server: ServerThread, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes and read until the server closes the connection; b'<timeout>' marks a
    server that held the connection open instead."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as conn:
        conn.sendall(data)
        out = b""
        try:
            while chunk := conn.recv(65536):
                out += chunk
        except TimeoutError:
            out += b"<timeout>"
    return out
