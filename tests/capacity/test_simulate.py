"""The simulations and the fit, against queueing theory and cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.capacity import simulate
from appliance.capacity.fit import fit
from appliance.capacity.measure import Window, is_stable, percentiles, spread


def test_one_row_at_a_time_is_an_m_d_1_queue() -> None:
    # Poisson arrivals at 400/s, a fixed 2 ms per request: utilisation 0.8. The mean wait
    # of M/D/1 is rho / (2 mu (1 - rho)) = 4 ms.
    rng = np.random.default_rng(1)
    arrivals = np.cumsum(rng.exponential(1 / 400, 100_000))
    out = simulate.batcher(arrivals, np.ones(len(arrivals), dtype=int), lambda b, k: 0.002, 1, 0.0)
    assert out.queue.mean() == pytest.approx(0.004, rel=0.08)
    assert np.allclose(out.latency - out.queue, 0.002)
    assert set(out.batch_rows) == {1}


def test_the_batcher_takes_what_waits_up_to_its_limit() -> None:
    # Five requests while the first run (1 row, 1 s + 1 s per row = 2 s) is going on.
    arrivals = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9]
    out = simulate.batcher(arrivals, [1] * 6, lambda b, k: 1.0 + b, 3, 0.0)
    assert out.batch_rows.tolist() == [1, 3, 3, 3, 2, 2]
    # first run 0..2; the next three start at 2 and take 4 s; the last two 6..9
    assert out.latency.tolist() == pytest.approx([2.0, 5.5, 5.4, 5.3, 8.2, 8.1])
    assert out.queue.tolist() == pytest.approx([0.0, 1.5, 1.4, 1.3, 5.2, 5.1])


def test_a_queue_delay_waits_for_more_rows_or_the_deadline() -> None:
    service = lambda b, k: 0.010  # noqa: E731
    # The second arrives within the delay of 5 ms and fills the batch (2 rows): one run
    # of both, at 4 ms.
    out = simulate.batcher([0.0, 0.004], [1, 1], service, 2, 0.005)
    assert out.batch_rows.tolist() == [2, 2]
    assert out.queue.tolist() == pytest.approx([0.004, 0.0])
    # The second arrives after the deadline: the first runs alone at 5 ms.
    out = simulate.batcher([0.0, 0.008], [1, 1], service, 2, 0.005)
    assert out.batch_rows.tolist() == [1, 1]
    assert out.queue.tolist() == pytest.approx([0.005, 0.007])
    # Rows that fill the batch end the wait at once.
    out = simulate.batcher([0.0], [4], service, 4, 0.005)
    assert out.queue.tolist() == [0.0]


def test_continuous_batching_steps_every_sequence_together() -> None:
    # t(n) = 1 + n; A (3 tokens) at 0, B (1 token) at 0.5: A's first step 0..2 runs alone,
    # then both: 2..5, then A alone 5..7.
    out = simulate.steps([0.0, 0.5], [3, 1], lambda n: 1.0 + n, 8)
    assert out.first is not None
    assert out.first.tolist() == pytest.approx([2.0, 4.5])
    assert out.latency.tolist() == pytest.approx([7.0, 4.5])
    assert out.queue.tolist() == pytest.approx([0.0, 1.5])
    # one sequence at a time: B waits for A's three steps
    out = simulate.steps([0.0, 0.5], [3, 1], lambda n: 1.0 + n, 1)
    assert out.latency.tolist() == pytest.approx([6.0, 7.5])


def test_busiest_window_and_overlap() -> None:
    arrivals = [0, 1, 2, 10, 10.1, 10.2, 10.3, 30]
    assert simulate.busiest(arrivals, 1.0) == (3, 7)
    assert simulate.overlap_peak([0, 1, 2], [5, 1.5, 6]) == 2


def test_fit_recovers_a_line_and_refuses_one_size() -> None:
    rng = np.random.default_rng(0)
    points = [(b, b, 0.002 + 0.0001 * b + rng.normal(0, 2e-5), 20) for b in (1, 2, 4, 8, 16)]
    line = fit(points, "test")
    assert line is not None
    assert line.a == pytest.approx(0.002, rel=0.05)
    assert line.c == pytest.approx(0.0001, rel=0.1)
    assert line.d == 0  # one row a request: what a request costs is in c
    assert line.throughput(10) == pytest.approx(10 / line(10))
    assert fit([(4, 4, 0.01, 3), (4, 4, 0.02, 1)], "one size") is None
    # never negative: times that fall with size are a constant
    flat = fit([(1, 1, 0.003, 1), (8, 8, 0.001, 1)], "falling")
    assert flat is not None and flat.c == 0 and flat.a > 0


def test_fit_separates_what_a_row_and_what_a_request_cost() -> None:
    # runs of b rows from k requests: 1 ms + 10 us a row + 200 us a request
    truth = [(b, k, 0.001 + 1e-5 * b + 2e-4 * k, 3) for b, k in
             [(1, 1), (4, 4), (16, 1), (64, 4), (16, 16), (64, 1)]]
    line = fit(truth, "profile")
    assert line is not None
    assert (line.a, line.c, line.d) == pytest.approx((0.001, 1e-5, 2e-4), rel=1e-6)
    assert line(64, 1) == pytest.approx(0.001 + 64e-5 + 2e-4)


def test_windows_are_stable_when_the_last_three_agree() -> None:
    def w(rate: float, latency: float) -> Window:
        return Window(1.0, int(rate), rate, latency)

    assert not is_stable([w(100, 1), w(100, 1)], 0.1)
    assert is_stable([w(50, 3), w(100, 1.0), w(105, 1.05), w(98, 0.97)], 0.1)
    assert not is_stable([w(100, 1.0), w(130, 1.0), w(100, 1.0)], 0.1)
    assert not is_stable([w(100, 1.0), w(100, 1.5), w(100, 1.0)], 0.1)
    assert not is_stable([w(0, 0), w(0, 0), w(0, 0)], 0.1)
    assert spread([2.0, 2.0]) == 0
    assert percentiles([]) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert percentiles(list(range(101)))["p95"] == pytest.approx(95)


def test_decoding_is_a_queue_of_its_own_in_front_of_the_batcher() -> None:
    # 1 s to decode each request, runs of 2 s: the second request is decoded while the
    # first runs, and waits only for the run to end.
    assert simulate.decoded([0.0, 0.5, 5.0], [1.0, 1.0, 1.0]).tolist() == [1.0, 2.0, 6.0]
    out = simulate.batcher([0.0, 0.5], [1, 1], lambda b, k: 2.0, 4, 0.0,
                           per_request=[1.0, 1.0])
    assert out.latency.tolist() == pytest.approx([3.0, 4.5])  # ends at 3 and at 5
    assert out.queue.tolist() == pytest.approx([0.0, 1.0])  # decoded at 2, run at 3
