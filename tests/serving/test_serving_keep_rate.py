"""Which requests' inputs and outputs the request log keeps: every one up to
serving.log_rows_per_second rows a second per version, then a uniform sample whose
weight (1 / its keep probability) is stored with the row. Driven by a fake clock."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
from helpers.serving import MemorySource, Servers, call

from appliance.serving.requestlog import KeepRate
from appliance.storage.home import Home


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Draws:
    """Uniform draws handed out from a list, so a test knows which are kept."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


def test_every_request_is_kept_up_to_the_rate_counting_rows() -> None:
    clock = Clock()
    rate = KeepRate(10, clock=clock, draw=Draws([]))  # a draw would fail: none is needed
    assert [rate.weight(1) for _ in range(6)] == [1.0] * 6
    assert rate.weight(4) == 1.0  # 10 rows this second: still within
    clock.now += 1.0  # the last second had 10 rows: still within
    assert [rate.weight(2) for _ in range(5)] == [1.0] * 5


def test_beyond_the_rate_a_uniform_sample_weighted_by_one_over_its_probability() -> None:
    clock = Clock()
    rate = KeepRate(10, clock=clock, draw=Draws([0.9, 0.3, 0.49, 0.5, 0.1] + [0.0] * 40))
    kept = [rate.weight(1) for _ in range(10)]
    assert kept == [1.0] * 10
    # row 11: p = 10/11; the draw 0.9 < 0.909 keeps it with weight 1.1
    assert rate.weight(1) == pytest.approx(1.1)
    # row 12: p = 10/12; 0.3 keeps it
    assert rate.weight(1) == pytest.approx(1.2)
    # next second, the last one had 12 rows: p = 10/12 from its first row on
    clock.now += 1.0
    assert rate.weight(1) == pytest.approx(1.2)  # draw 0.49
    # a request of 8 rows: the second so far has 9 < 12 rows, p = 10/12 still; draw 0.5 keeps
    assert rate.weight(8) == pytest.approx(1.2)
    # 20 more rows in one request: 29 rows so far, p = 10/29; draw 0.1 keeps it
    assert rate.weight(20) == pytest.approx(2.9)


def test_a_draw_above_the_probability_is_not_kept_and_the_rate_zero_keeps_none() -> None:
    clock = Clock()
    rate = KeepRate(1, clock=clock, draw=Draws([0.6]))
    assert rate.weight(1) == 1.0
    assert rate.weight(1) is None  # p = 1/2, draw 0.6
    assert KeepRate(0, clock=clock, draw=Draws([])).weight(1) is None


def test_a_quiet_gap_forgets_the_busy_second_before_it() -> None:
    clock = Clock()
    rate = KeepRate(5, clock=clock, draw=Draws([0.0] * 100))
    for _ in range(50):
        rate.weight(1)
    clock.now += 3.0  # two seconds without a request: nothing to remember
    assert [rate.weight(1) for _ in range(5)] == [1.0] * 5


def test_weights_make_the_kept_rows_stand_for_all_traffic() -> None:
    # 40 seconds of 200 single-row requests at a rate of 20: about 20 kept a second, and
    # their weights add up to the traffic (Horvitz-Thompson), within a few per cent.
    clock = Clock()
    rate = KeepRate(20, clock=clock, draw=random.Random(4).random)
    kept: list[float] = []
    for second in range(40):
        clock.now = 1000.0 + second + 0.5
        for _ in range(200):
            w = rate.weight(1)
            if w is not None:
                kept.append(w)
    assert 20 * 40 * 0.8 < len(kept) < 20 * 40 * 1.6
    assert sum(kept) == pytest.approx(200 * 40, rel=0.1)


def test_the_daemon_stores_kept_inputs_with_their_weight(
        servers: Servers, source: MemorySource, home: Home) -> None:
    server = servers(source, log_rows_per_second=3)
    clock = Clock()
    server.app.engine.keep_rates[("mlp", "1")] = KeepRate(
        3, clock=clock, draw=Draws([0.7, 0.1, 0.9, 0.2]))
    x = np.ones((1, 32), dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    for i in range(7):
        assert call(server, "POST", "/v2/models/mlp/infer", {**body, "id": f"k-{i}"})[0] == 200
    mon = home.monitoring_db()
    try:
        deadline = time.monotonic() + 30
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(rows) < 7:
            rows = list(mon.query("SELECT request_id, inputs, outputs, weight FROM requests"
                                  " ORDER BY id"))
            time.sleep(0.05)
    finally:
        mon.close()
    assert [r["request_id"] for r in rows] == [f"k-{i}" for i in range(7)]
    # three kept in full, then p = 3/4 (kept: draw 0.7), 3/5 (0.1), 3/6 (0.9: not), 3/7 (0.2)
    expected = [1.0, 1.0, 1.0, 4 / 3, 5 / 3, None, 7 / 3]
    assert [r["weight"] for r in rows] == [pytest.approx(w) if w else None for w in expected]
    for r, w in zip(rows, expected, strict=True):
        assert (r["inputs"] is None) == (w is None) and (r["outputs"] is None) == (w is None)
    assert json.loads(str(rows[0]["inputs"]))["x"][0] == pytest.approx([1.0] * 32)
