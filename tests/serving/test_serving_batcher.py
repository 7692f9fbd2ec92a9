"""The dynamic batcher: where batches run, what merges, and what a bad request spoils."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from appliance.errors import Unavailable
from appliance.serving.batcher import INLINE_MAX_US, Batcher, Job, batches

X = np.ones((1, 3), dtype=np.float32)


class Model:
    """Doubles its input; records the rows and the thread of every run."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.runs: list[tuple[int, int]] = []  # (rows, thread id)
        self.started = threading.Event()

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed["x"]
        if not np.isfinite(x).all():
            raise ValueError("the model refuses non-finite input")
        self.started.set()
        if self.seconds:
            time.sleep(self.seconds)
        self.runs.append((len(x), threading.get_ident()))
        return [x * 2]


def job(loop: asyncio.AbstractEventLoop, x: np.ndarray = X) -> Job:
    return Job({"x": x}, len(x), (x.shape[1:],), loop.create_future())


def batcher(loop: asyncio.AbstractEventLoop, model: Model, compute_us: float,
            delay_us: int = 0, capacity: int = 100) -> Batcher:
    return Batcher("m", model, ("y",), batchable=True, max_batch_size=8,
                   max_queue_delay_us=delay_us, capacity=capacity, loop=loop,
                   on_batch=lambda batch, rows, us: None, compute_us=compute_us)


async def answered(b: Batcher, jobs: list[Job]) -> list[Job]:
    """Submit jobs in one turn, wait for every answer, then stop the batcher."""
    for j in jobs:
        b.submit(j)
    await asyncio.gather(*(j.future for j in jobs))
    b.stop()
    b.join(5)
    return jobs


def scenario(fn: Callable[[asyncio.AbstractEventLoop], object]) -> object:
    async def main() -> object:
        return await fn(asyncio.get_running_loop())  # type: ignore[misc]

    return asyncio.run(main())


def test_a_fast_model_merges_one_turns_requests_on_the_event_loop() -> None:
    model = Model()

    async def run(loop: asyncio.AbstractEventLoop) -> list[Job]:
        b = batcher(loop, model, compute_us=10)
        assert b.on_loop
        jobs = [job(loop, X * i) for i in range(5)]
        for j in jobs:  # read in one turn of the loop
            b.submit(j)
        assert not any(j.future.done() for j in jobs)  # held for the end of the turn
        await asyncio.gather(*(j.future for j in jobs))
        b.stop()
        b.join(5)
        return jobs

    jobs = scenario(run)
    assert model.runs == [(5, threading.get_ident())]  # one run, on this (the loop's) thread
    for i, j in enumerate(jobs):  # type: ignore[arg-type]
        assert j.batch_rows == 5 and j.error is None
        np.testing.assert_array_equal(j.outputs["y"], X * i * 2)


def test_a_request_held_alone_runs_at_once() -> None:
    model = Model()

    async def run(loop: asyncio.AbstractEventLoop) -> bool:
        b = batcher(loop, model, compute_us=10)
        j = job(loop)
        b.submit(j, alone=True)
        done = j.future.done()
        b.stop()
        return done

    assert scenario(run) is True and len(model.runs) == 1


def test_a_slow_model_runs_on_its_own_thread_and_still_merges() -> None:
    model = Model(seconds=0.05)

    async def run(loop: asyncio.AbstractEventLoop) -> list[Job]:
        b = batcher(loop, model, compute_us=INLINE_MAX_US * 10)
        assert not b.on_loop
        first = job(loop)
        b.submit(first, alone=True)  # alone or not, a slow model never blocks the loop
        assert not first.future.done()
        while not model.started.is_set():  # until the thread is busy with the first
            await asyncio.sleep(0.0005)
        rest = [job(loop) for _ in range(4)]
        for j in rest:
            b.submit(j)
        await asyncio.gather(first.future, *(j.future for j in rest))
        b.stop()
        b.join(5)
        return rest

    rest = scenario(run)
    assert all(tid != threading.get_ident() for _, tid in model.runs)
    assert [rows for rows, _ in model.runs] == [1, 4]
    assert all(j.batch_rows == 4 for j in rest)  # type: ignore[attr-defined]


class Stalls(Model):
    """A fast model whose runs listed in ``stalls`` take that long (as when the operating
    system preempts the thread on a busy machine)."""

    def __init__(self, stalls: dict[int, float]) -> None:
        super().__init__()
        self.stalls = stalls

    def __call__(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if len(self.runs) in self.stalls:
            time.sleep(self.stalls[len(self.runs)])
        return super().__call__(feed)


def alone_runs(model: Model, count: int) -> list[bool]:
    """Submit ``count`` requests one after another, each alone; whether the batcher ran
    each on the event loop, as it decided before the request."""

    async def run(loop: asyncio.AbstractEventLoop) -> list[bool]:
        b = batcher(loop, model, compute_us=10)
        seen = []
        for _ in range(count):
            seen.append(b.on_loop)
            j = job(loop)
            b.submit(j, alone=True)
            await j.future
        b.stop()
        b.join(5)
        return seen

    return scenario(run)  # type: ignore[return-value]


def test_a_fast_model_stays_on_the_loop_after_a_stalled_run() -> None:
    model = Stalls({3: 0.03})  # the fourth run stalls for 30 ms, 300 times the limit
    seen = alone_runs(model, 8)
    assert seen == [True] * 8
    assert all(tid == threading.get_ident() for _, tid in model.runs)


def test_a_model_that_turns_slow_leaves_the_loop() -> None:
    model = Stalls({i: 0.002 for i in range(1, 20)})  # every run after the first: 2 ms
    seen = alone_runs(model, 8)
    assert seen[0]
    assert seen[5:] == [False] * 3  # most recent runs were slow: off the loop
    assert model.runs[-1][1] != threading.get_ident()


@pytest.mark.parametrize("compute_us", [10, INLINE_MAX_US * 10])
def test_a_bad_request_fails_alone(compute_us: float) -> None:
    model = Model()

    async def run(loop: asyncio.AbstractEventLoop) -> list[Job]:
        b = batcher(loop, model, compute_us=compute_us)
        return await answered(
            b, [job(loop), job(loop, np.full((1, 3), np.nan, np.float32)), job(loop)])

    good, bad, also_good = scenario(run)  # type: ignore[misc]
    assert isinstance(bad.error, ValueError) and not bad.outputs
    for j in (good, also_good):
        assert j.error is None
        np.testing.assert_array_equal(j.outputs["y"], X * 2)


def test_the_queue_delay_gathers_requests_from_later_turns() -> None:
    model = Model()

    async def run(loop: asyncio.AbstractEventLoop) -> None:
        b = batcher(loop, model, compute_us=10, delay_us=50_000)
        jobs = []
        for _ in range(3):
            jobs.append(job(loop))
            b.submit(jobs[-1])
            await asyncio.sleep(0.001)  # another turn of the loop
        await asyncio.gather(*(j.future for j in jobs))
        b.stop()

    scenario(run)
    assert [rows for rows, _ in model.runs] == [3]


def test_a_full_queue_refuses_with_unavailable() -> None:
    async def run(loop: asyncio.AbstractEventLoop) -> None:
        b = batcher(loop, Model(), compute_us=10, capacity=2)
        held = [job(loop), job(loop)]
        for j in held:
            b.submit(j)
        with pytest.raises(Unavailable, match="overloaded"):
            b.submit(job(loop))
        await asyncio.gather(*(j.future for j in held))
        b.submit(job(loop), alone=True)  # room again once answered
        b.stop()

    scenario(run)


def test_batches_split_by_shape_and_row_limit_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        wide = np.ones((1, 5), np.float32)
        jobs = [job(loop, np.ones((3, 3), np.float32)), job(loop, wide),
                job(loop, np.ones((4, 3), np.float32)), job(loop, np.ones((2, 3), np.float32)),
                job(loop, wide)]
        got = [([jobs.index(j) for j in batch], rows) for batch, rows in batches(jobs, 8)]
    finally:
        loop.close()
    assert got == [([0, 2], 7), ([3], 2), ([1, 4], 2)]


def test_requests_of_many_rows_merge_on_the_thread_up_to_the_limit() -> None:
    # Four 2-row requests fill a limit of 8 (as four 64-row requests fill the default 256):
    # one run and one hand-off back serve all four; the fifth request runs next.
    model = Model(seconds=0.01)
    rows = np.arange(10, dtype=np.float32).reshape(5, 2, 1) * np.ones((1, 1, 3), np.float32)

    async def run(loop: asyncio.AbstractEventLoop) -> list[Job]:
        b = batcher(loop, model, compute_us=INLINE_MAX_US * 10)
        assert not b.on_loop
        return await answered(b, [job(loop, rows[i]) for i in range(5)])

    jobs = scenario(run)
    assert [r for r, _ in model.runs] == [8, 2]
    assert all(t != threading.get_ident() for _, t in model.runs)
    for i, j in enumerate(jobs):  # type: ignore[arg-type]
        assert j.batch_rows == (8 if i < 4 else 2)
        np.testing.assert_array_equal(j.outputs["y"], rows[i] * 2)


def test_the_default_limit_is_the_configured_default() -> None:
    from appliance.config import SETTINGS_BY_NAME, parse_config
    from appliance.serving.engine import EngineSettings

    assert SETTINGS_BY_NAME["serving.max_batch_size"].default == 256
    assert EngineSettings.from_config(parse_config({})) == EngineSettings()


def test_the_thread_hands_batches_back_through_its_pipe_and_closes_it() -> None:
    """Every batch the thread finishes is answered on the loop; once the thread has ended,
    its wake-up pipe is closed on the loop (no descriptor left per retired version)."""
    import os

    model = Model(seconds=0.002)

    async def run(loop: asyncio.AbstractEventLoop) -> tuple[list[Job], list[int]]:
        b = batcher(loop, model, compute_us=INLINE_MAX_US * 10)
        fds = list(b._wake_fds)
        jobs = []
        for i in range(6):  # one at a time, and two shapes at once: several hand-backs
            jobs.append(job(loop, X * i))
            jobs.append(job(loop, np.ones((1, 5), np.float32) * i))
            for j in jobs[-2:]:
                b.submit(j)
            await asyncio.gather(*(j.future for j in jobs[-2:]))
        b.stop()
        b.join(5)

        async def closed() -> None:  # by a callback the ended thread queued
            while b._wake_fds:
                await asyncio.sleep(0.001)

        await asyncio.wait_for(closed(), 10)
        return jobs, fds

    jobs, fds = scenario(run)  # type: ignore[misc]
    assert all(tid != threading.get_ident() for _, tid in model.runs)
    for i, j in enumerate(jobs):
        assert j.error is None
        np.testing.assert_array_equal(j.outputs["y"][0, 0], (i // 2) * 2)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_hand_back_that_raises_leaves_the_other_batches_answered() -> None:
    """Batches finished together are answered in one turn; a delivery that raises (a bug in
    the metrics) must not strand the batches behind it."""
    calls: list[int] = []

    def on_batch(batch: list[Job], rows: int, us: int) -> None:
        calls.append(rows)
        if len(calls) == 1:
            raise RuntimeError("broken metrics")

    async def run(loop: asyncio.AbstractEventLoop) -> list[Job]:
        b = Batcher("m", Model(), ("y",), batchable=True, max_batch_size=8,
                    max_queue_delay_us=0, capacity=10, loop=loop, on_batch=on_batch,
                    compute_us=INLINE_MAX_US * 10)
        errors: list[object] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
        first, second = job(loop), job(loop)
        b.pending = 2
        b._done.extend([([first], 1, 5), ([second], 1, 5)])  # as the thread queues them
        loop.call_soon(b._drain)  # as the readable pipe calls it; the first delivery raises
        await asyncio.wait_for(second.future, 5)
        b.stop()
        b.join(5)
        assert [type(e) for e in errors] == [RuntimeError]
        return [first, second]

    first, second = scenario(run)  # type: ignore[misc]
    assert calls == [1, 1] and second.future.done()


def test_jobs_on_threads_are_counted_for_the_busy_poll() -> None:
    """Jobs handed to a thread count in the shared tally until they are answered; a fast
    model's jobs, run on the loop, never count."""
    from appliance.serving.batcher import Tally

    model = Model(seconds=0.01)
    tally = Tally()

    async def run(loop: asyncio.AbstractEventLoop) -> tuple[int, int, int]:
        slow = Batcher("slow", model, ("y",), batchable=True, max_batch_size=8,
                       max_queue_delay_us=0, capacity=10, loop=loop,
                       on_batch=lambda batch, rows, us: None,
                       compute_us=INLINE_MAX_US * 10, on_threads=tally)
        fast = Batcher("fast", Model(), ("y",), batchable=True, max_batch_size=8,
                       max_queue_delay_us=0, capacity=10, loop=loop,
                       on_batch=lambda batch, rows, us: None, compute_us=10,
                       on_threads=tally)
        jobs = [job(loop), job(loop, np.ones((1, 5), np.float32))]
        for j in jobs:
            slow.submit(j)
        held = tally.n
        quick = job(loop)
        fast.submit(quick, alone=True)
        await asyncio.gather(*(j.future for j in jobs), quick.future)
        answered_n = tally.n
        for b in (slow, fast):
            b.stop()
            b.join(5)
        return held, answered_n, len(model.runs)

    held, answered_n, runs = scenario(run)  # type: ignore[misc]
    assert held == 2 and answered_n == 0 and runs == 2
