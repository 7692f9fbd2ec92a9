"""What handing a batch to a slow model's thread and back costs, beside the run itself.

    .venv/bin/python -m tests.bench.bench_handoff [--requests 400] [--rounds 6] [--run-us 1000]

One request at a time (as at one connection) goes through a real ``Batcher`` whose model
runs on its thread: the model releases the GIL for ``--run-us`` as onnxruntime does, and
the time from ``submit`` to the request's answer on the event loop, less the run, is the
hand-off. Ours hands each batch back through the batcher's own pipe; the baseline is the
same batcher handing back with the event loop's ``call_soon_threadsafe``, as it did before.
The two alternate in rounds in one process; prints the median of each and the ratio.

    .venv/bin/python -m tests.bench.bench_handoff --spin

compares instead the server's busy poll (``serving.busy_poll_us``, touched as a request is
read) that stops while a job is on a batcher thread (ours) with one that polls its whole
window regardless, holding the GIL the thread needs (the baseline); both hand back
through the pipe.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from appliance.serving.batcher import INLINE_MAX_US, Batcher, Job, Tally
from appliance.serving.http.transport import BUSY_POLL_US, BusyPoll


class ThreadsafeBatcher(Batcher):
    """The baseline: a finished batch is handed back with ``call_soon_threadsafe``."""

    def _hand_back(self, batch: list[Job], rows: int, compute_us: int) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch, rows, compute_us)
        except RuntimeError:
            return False
        return True


async def overheads(kind: type[Batcher], requests: int, run_us: float,
                    poll: str = "") -> list[float]:
    """Microseconds from submit to answer, less the run, of each request after a warm-up.
    ``poll``: '' none, 'stops' the server's busy poll, 'spins' one blind to the threads."""
    loop = asyncio.get_running_loop()
    ran: list[float] = []

    def model(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        started = time.perf_counter()
        time.sleep(run_us / 1e6)  # the GIL is free meanwhile, as in session.run
        ran.append(time.perf_counter() - started)
        return [feed["x"]]

    b = kind("m", model, ("y",), batchable=True, max_batch_size=8, max_queue_delay_us=0,
             capacity=10, loop=loop, on_batch=lambda batch, rows, us: None,
             compute_us=INLINE_MAX_US * 100)
    busy = BusyPoll(loop, BUSY_POLL_US, b.on_threads if poll == "stops" else Tally())
    x = np.ones((1, 4), np.float32)
    out = []
    for i in range(requests + 20):
        await asyncio.sleep(0.0003)  # the client's turn: the threads go idle, as at c=1
        job = Job({"x": x}, 1, (x.shape[1:],), loop.create_future())
        started = time.perf_counter()
        if poll:
            busy.touch()  # the request was just read
        b.submit(job)
        await job.future
        if i >= 20:
            out.append((time.perf_counter() - started - ran[-1]) * 1e6)
    b.stop()
    b.join(5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400, help="Requests a side a round.")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--run-us", type=float, default=1000.0, help="The model's run time.")
    parser.add_argument("--spin", action="store_true",
                        help="Compare the busy poll that stops for thread jobs with a blind one.")
    args = parser.parse_args()
    sides: dict[str, tuple[type[Batcher], str]] = (
        {"poll stops": (Batcher, "stops"), "poll spins": (Batcher, "spins")} if args.spin else
        {"pipe": (Batcher, ""), "call_soon_threadsafe": (ThreadsafeBatcher, "")})
    medians: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.rounds):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]
        for name in order:
            kind, poll = sides[name]
            got = asyncio.run(overheads(kind, args.requests, args.run_us, poll))
            medians[name].append(float(np.median(got)))
        print(f"round {i + 1}: " + ", ".join(f"{n} {medians[n][-1]:.1f} us" for n in order),
              flush=True)
    ours_name, base_name = list(sides)
    ours = float(np.median(medians[ours_name]))
    base = float(np.median(medians[base_name]))
    print(f"hand-off to a batcher's thread and back, one request at a time, a {args.run_us:g} us "
          f"run, median of {args.rounds} rounds' medians: ours ({ours_name}) {ours:.1f} us, "
          f"{base_name} {base:.1f} us, ratio {ours / base:.2f}")


if __name__ == "__main__":
    main()
