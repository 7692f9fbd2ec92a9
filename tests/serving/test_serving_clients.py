"""Clients that already exist must work unchanged: tritonclient, and gunicorn as the server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers.serving import MemorySource, Servers, call, mlp, mlp_numpy

from appliance.registry import import_model, set_alias
from appliance.storage.home import Home


def test_tritonclient_http_works_unchanged(servers: Servers, source: MemorySource) -> None:
    import tritonclient.http as triton

    server = servers(source)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mlp")
        meta = client.get_model_metadata("mlp")
        assert meta["inputs"][0]["shape"] == [-1, 32]
        x = np.random.default_rng(3).standard_normal((5, 32)).astype(np.float32)
        for binary in (True, False):
            inp = triton.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = triton.InferRequestedOutput("y", binary_data=binary)
            result = client.infer("mlp", [inp], outputs=[out], request_id="tc-1")
            np.testing.assert_allclose(result.as_numpy("y"), mlp_numpy(x, 1), atol=1e-4)
            assert result.get_response()["id"] == "tc-1"
        result = client.infer("mlp", [inp], model_version="2")
        np.testing.assert_allclose(result.as_numpy("y"), mlp_numpy(x, 2), atol=1e-4)
        a = triton.InferInput("a", [1, 3], "FP32")
        a.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
        b = triton.InferInput("b", [1, 1], "INT64")
        b.set_data_from_numpy(np.array([[4]], dtype=np.int64))
        result = client.infer("two", [a, b])
        assert result.as_numpy("flag").tolist() == [[True]]
        np.testing.assert_allclose(result.as_numpy("sum"), [[6, 7, 8]])
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_asgi_worker_serves_the_registry_and_swaps(home: Home, tmp_path: Path) -> None:
    db = home.db()
    try:
        for version in (1, 2):
            path = tmp_path / f"v{version}.onnx"
            path.write_bytes(mlp(version))
            import_model(db, home.blobs, "fraud", path, actor="test")
        set_alias(db, "fraud", 1, "production", actor="test")
        port = _free_port()
        config = tmp_path / "appliance.yaml"
        config.write_text("serving:\n  poll_interval_s: 0.1\n  intra_op_threads: 1\n")
        env = {**os.environ, "APPLIANCE_HOME": str(home.root), "APPLIANCE_CONFIG": str(config)}
        gunicorn = Path(sys.executable).with_name("gunicorn")
        proc = subprocess.Popen(
            [str(gunicorn), "-k", "asgi", "-w", "1", "--bind", f"127.0.0.1:{port}",
             "--graceful-timeout", "5", "appliance.serving.http:create_app()"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        try:
            server = type("S", (), {"host": "127.0.0.1", "port": port})()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if call(server, "GET", "/v2/health/ready")[0] == 200:  # type: ignore[arg-type]
                        break
                except OSError:
                    time.sleep(0.1)
            # the one request adapter: the same path decoding as the built-in server
            assert call(server, "GET", "/v2/health/%6Cive")[0] == 200  # type: ignore[arg-type]
            assert call(server, "GET", "/v2/models/fraud/versions/1_0")[0] == 400  # type: ignore[arg-type]
            x = np.ones((2, 32), dtype=np.float32)
            body = {"inputs": [{"name": "x", "shape": [2, 32], "datatype": "FP32",
                                "data": x.tolist()}]}
            status, _, doc = call(server, "POST", "/v2/models/fraud/infer", body)  # type: ignore[arg-type]
            assert status == 200, doc
            assert doc["model_version"] == "1"
            np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(2, 2),
                                       mlp_numpy(x, 1), atol=1e-4)
            set_alias(db, "fraud", 2, "production", actor="test")
            deadline = time.monotonic() + 2
            version = "1"
            while time.monotonic() < deadline and version != "2":
                version = call(server, "POST", "/v2/models/fraud/infer", body)[2]["model_version"]  # type: ignore[arg-type]
            assert version == "2", "the alias move was not noticed within 2 s"
        finally:
            proc.terminate()
            out = proc.communicate(timeout=30)[0].decode(errors="replace")
        assert proc.returncode == 0, out
    finally:
        db.close()
