"""Traffic for the demo: an Open Inference Protocol (V2 REST, JSON) client.

Each request carries one application and its own id, so delayed labels can be
joined back to the prediction that was served for it. Several threads keep
connections alive; every non-200 answer and every connection error is counted,
because "no failed requests" is something the demo has to show, not claim.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Outcome:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, int] = field(default_factory=dict)  # request id -> predicted class index

    def merge(self, other: Outcome) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, 5 - len(self.errors))])
        for k, v in other.versions.items():
            self.versions[k] = self.versions.get(k, 0) + v
        self.predictions.update(other.predictions)


_BOOLEAN = {"yes": 1.0, "no": 0.0, "true": 1.0, "false": 0.0}


def _input(spec: dict[str, Any], value: Any) -> dict[str, Any]:
    datatype = spec["datatype"]
    if datatype == "BYTES":
        data: list[Any] = [str(value)]
    elif isinstance(value, str) and value.lower() in _BOOLEAN:
        data = [_BOOLEAN[value.lower()]]  # a yes/no column the model takes as 1/0
    else:
        data = [float(value)]
    return {"name": spec["name"], "shape": [1, 1], "datatype": datatype, "data": data}


class Client:
    """One keep-alive connection to the inference server."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json"} if body else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def model_inputs(host: str, port: int, model: str) -> list[dict[str, Any]]:
    client = Client(host, port)
    try:
        status, body = client.request("GET", f"/v2/models/{model}")
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"model metadata for {model}: HTTP {status}: {body[:200]!r}")
    return list(json.loads(body)["inputs"])


def send(
    host: str, port: int, model: str, rows: Sequence[dict[str, Any]], ids: Sequence[str],
    inputs: list[dict[str, Any]], *, threads: int = 4,
    on_progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Send one request per row from ``threads`` connections; return what happened."""
    total = Outcome()
    lock = threading.Lock()
    done = [0]

    def worker(part: range) -> None:
        mine = Outcome()
        client = Client(host, port)
        try:
            for i in part:
                mine.sent += 1
                try:
                    body = json.dumps({
                        "id": ids[i],
                        "inputs": [_input(spec, rows[i][spec["name"]]) for spec in inputs],
                    }).encode()
                except (KeyError, ValueError) as exc:
                    mine.failed += 1
                    mine.errors.append(f"{ids[i]}: can not encode the request: {exc!r}")
                    continue
                try:
                    status, payload = client.request("POST", f"/v2/models/{model}/infer", body)
                except (OSError, http.client.HTTPException) as exc:
                    mine.failed += 1
                    mine.errors.append(f"{ids[i]}: {exc}")
                    continue
                if status != 200:
                    mine.failed += 1
                    mine.errors.append(f"{ids[i]}: HTTP {status} {payload[:120]!r}")
                    continue
                mine.ok += 1
                answer = json.loads(payload)
                version = str(answer.get("model_version", "?"))
                mine.versions[version] = mine.versions.get(version, 0) + 1
                for out in answer.get("outputs", []):
                    if out["name"] == "label":
                        mine.predictions[ids[i]] = int(np.ravel(out["data"])[0])
                if on_progress is not None:
                    with lock:
                        done[0] += 1
                        n = done[0]
                    if n % 100 == 0:
                        on_progress(n)
        finally:
            client.close()
            with lock:
                total.merge(mine)

    n = len(rows)
    parts = [range(k, n, threads) for k in range(threads)]
    pool = [threading.Thread(target=worker, args=(p,), daemon=True) for p in parts]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return total
