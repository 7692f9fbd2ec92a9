"""Language-model serving benchmark: raw onnxruntime-genai against the daemon, in one run.

    .venv/bin/python -m tests.bench.bench_llm [--tokens 60] [--requests 30] [--no-small]

Builds the small model (and, unless ``--no-small``, the larger one of a few million
parameters; both cached under ``--work``, default a folder in the system's temporary
directory) and measures, for each:

- raw: onnxruntime-genai in this process (its default operator threads; the daemon's
  model gets one, ``llm.intra_op_threads``), one ``Generator`` per prompt, generating
  exactly ``--tokens`` tokens (the end-of-sequence token masked), greedy: tokens per
  second over the whole request, and the time to the first token;
- ours, not streamed and streamed: the same prompts through ``/v1/completions`` of the
  serving daemon (its application and server, in a child process, with the model
  registered, promoted and loaded from the registry), from a keep-alive client here (a
  socket read as the answer's framing says, not ``http.client``),
  with ``min_tokens`` = ``max_tokens`` = ``--tokens``: tokens per second as the client
  sees them, and the time to the first streamed text;
- eight concurrent streams: the aggregate tokens per second as a ratio of one stream's.

Raw and ours take turns request by request, since this machine's speed drifts from
minute to minute. Prints ours, raw and the ratio for each goal.

The daemon runs with its guardrails on, as by default, but with
``guardrails.stream_hold_chars: 0`` unless ``--stream-hold N`` is given: the goals are the
serving path's own cost. ``--stream-hold 128``, the appliance's default, measures what
holding back text that could still become a match costs (docs/guardrails.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.llm import tiny

# The daemon's model gets one operator thread (llm.intra_op_threads), leaving the other
# core of a small machine to the daemon and the client; raw keeps onnxruntime's default.
THREADS = 1
STREAM_HOLD = 0  # guardrails.stream_hold_chars of the daemon (--stream-hold)
PROFILE_ENV = "APPLIANCE_BENCH_PROFILE"  # --profile: where the daemon's cProfile stats go
GOALS = {"tiny": {"plain": 0.90, "stream": 0.70}, "small": {"plain": 0.95, "stream": 0.95}}


def build(work: Path, size: str) -> Path:
    folder = work / f"model-{size}"
    if not (folder / "genai_config.json").exists():
        print(f"building the {size} model in {folder} ...", flush=True)
        started = time.perf_counter()
        tiny.build(folder, size=size)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def prompts() -> list[str]:
    return [tiny.prompt_for(q) for q, _ in tiny.facts()]


class Raw:
    """onnxruntime-genai in this process: one ``Generator`` per request, as a program that
    embeds it would run it."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(str(folder))
        self.tokenizer = og.Tokenizer(self.model)
        self.encoded = [self.tokenizer.encode(p) for p in prompts()]

    def one(self, i: int, tokens: int) -> tuple[int, float, float]:
        """(tokens, seconds, seconds to the first token) of one request."""
        og = self.og
        ids = self.encoded[i % len(self.encoded)]
        started = time.perf_counter()
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + tokens, min_length=len(ids) + tokens,
                                  do_sample=False)
        generator = og.Generator(self.model, params)
        generator.append_tokens(ids)
        stream = self.tokenizer.create_stream()
        n = 0
        first = 0.0
        while not generator.is_done():
            generator.generate_next_token()
            stream.decode(int(generator.get_next_tokens()[0]))
            n += 1
            if n == 1:
                first = time.perf_counter() - started
        return n, time.perf_counter() - started, first


def serve_child(home: str, port_file: str, hold: str) -> None:
    """Child process: the serving daemon's application and server over a data directory."""
    import asyncio
    import signal

    from appliance.config import parse_config
    from appliance.serving.http import create_app
    from appliance.serving.http.transport import serve
    from appliance.storage.home import Home

    config = parse_config({"serving": {"poll_interval_s": 0.2},
                           "llm": {"intra_op_threads": THREADS},
                           "guardrails": {"stream_hold_chars": int(hold)}})
    app = create_app(config, home=Home(root=Path(home)))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await serve(app, "127.0.0.1", 0, stop=stop,
                    on_ready=lambda p: Path(port_file).write_text(str(p)))

    profile = os.environ.get(PROFILE_ENV)
    if not profile:
        asyncio.run(main())
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(asyncio.run, main())
    finally:
        profiler.dump_stats(profile)


class Daemon:
    def __init__(self, work: Path, folder: Path, name: str) -> None:
        from appliance.auth.permissions import Principal, Role
        from appliance.promotion.service import promote
        from appliance.registry import import_folder
        from appliance.storage.home import Home, init_home

        self.home = Home(root=Path(tempfile.mkdtemp(prefix="bench-llm-", dir=work)))
        init_home(self.home)
        with self.home.db() as db:
            mv, _ = import_folder(db, self.home.blobs, name, folder, actor="bench")
        promote(self.home, mv.ref, Principal(name="bench", role=Role.ADMIN))
        port_file = self.home.root / "port"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.bench.bench_llm",
                                      "--serve-child", str(self.home.root), str(port_file),
                                      str(STREAM_HOLD)])
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the serving daemon did not start")
            time.sleep(0.1)
        self.port = int(port_file.read_text())
        self.name = name
        while name not in self.get("/v1/models"):
            time.sleep(0.1)

    def get(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.home.root, ignore_errors=True)  # the model is kept, not the data


class Client:
    """A keep-alive HTTP/1.1 client on a socket of its own, reading exactly what the server
    sends (a ``Content-Length`` body or chunks): the client's own cost is not the server's,
    and ``http.client`` spends about half a millisecond of Python a request on this
    machine, a tenth of a tiny model's answer."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("the daemon closed the connection")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._more()
        return self._take(end + 2)[:-2]

    def post(self, path: str, body: bytes) -> tuple[int, dict[bytes, bytes]]:
        """Send a request; the status and headers (names lower-cased) of its answer."""
        self.sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nhost: bench\r\n"
                          b"content-type: application/json\r\ncontent-length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
        status = int(self._line().split(b" ", 2)[1])
        headers = {}
        while line := self._line():
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def chunks(self, headers: dict[bytes, bytes]) -> Any:
        """The body's pieces as they arrive: each chunk, or a ``Content-Length`` body."""
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            yield self._take(int(headers.get(b"content-length", b"0")))
            return
        while size := int(self._line().split(b";")[0], 16):
            yield self._take(size)
            self._take(2)
        while self._line():  # trailers, then the blank line
            pass


def one(conn: Client, name: str, prompt: str, tokens: int, stream: bool,
        figures: list[dict[str, Any]] | None = None) -> tuple[int, float, float]:
    """(tokens, seconds, seconds to the first text) of one request, as the client sees it;
    an answer not streamed adds its ``appliance`` figures to ``figures``."""
    body = json.dumps({"model": name, "prompt": prompt, "max_tokens": tokens,
                       "min_tokens": tokens, "temperature": 0, "stream": stream}).encode()
    started = time.perf_counter()
    status, headers = conn.post("/v1/completions", body)
    if not stream:
        doc = json.loads(b"".join(conn.chunks(headers)))
        if status != 200:
            raise SystemExit(f"the daemon answered {status}: {doc}")
        elapsed = time.perf_counter() - started
        if figures is not None:
            figures.append({**doc["appliance"], "client_ms": elapsed * 1e3})
        return doc["usage"]["completion_tokens"], elapsed, elapsed
    if status != 200:
        raise SystemExit(f"the daemon answered {status}: {b''.join(conn.chunks(headers))!r}")
    first = 0.0
    done = False
    for chunk in conn.chunks(headers):
        for event in chunk.split(b"\n\n"):
            if event.startswith(b"data: {") and b'"text":""' not in event and not first:
                first = time.perf_counter() - started
            elif event.startswith(b"data: [DONE]"):
                done = True
    if not done:
        raise SystemExit("a stream ended without data: [DONE]")
    elapsed = time.perf_counter() - started
    return tokens, elapsed, first  # min_tokens = max_tokens: the answer has exactly this many


def interleaved(raw: Raw, daemon: Daemon, tokens: int, requests: int) -> dict[str, Any]:
    """Raw, ours not streamed and ours streamed, one request of each in turn, so that all
    three see the machine as it is at that moment; medians of tokens/s and first token."""
    conn = Client(daemon.port)
    texts = prompts()
    rates: dict[str, list[float]] = {"raw": [], "plain": [], "stream": []}
    firsts: dict[str, list[float]] = {"raw": [], "plain": [], "stream": []}
    raw_ms: list[float] = []
    figures: list[dict[str, Any]] = []
    try:
        for i in range(requests):
            for kind in ("raw", "plain", "stream"):
                if kind == "raw":
                    n, seconds, first = raw.one(i, tokens)
                    raw_ms.append(seconds * 1e3)
                else:
                    n, seconds, first = one(conn, daemon.name, texts[i % len(texts)], tokens,
                                            kind == "stream",
                                            figures if kind == "plain" else None)
                rates[kind].append(n / seconds)
                firsts[kind].append(first)
    finally:
        conn.close()
    out: dict[str, Any] = {
        kind: {"tokens_per_s": statistics.median(rates[kind]),
               "ttft_ms": statistics.median(firsts[kind]) * 1e3} for kind in rates}
    # Where an answer not streamed spends the client's time, by the daemon's own figures.
    out["parts"] = {"raw_ms": statistics.median(raw_ms),
                    **{k: statistics.median(f[k] for f in figures)
                       for k in ("client_ms", "e2e_ms", "queue_ms", "generation_ms")}}
    return out


def concurrent(daemon: Daemon, tokens: int, streams: int, seconds: float) -> float:
    """Aggregate tokens/s of ``streams`` clients streaming at once for ``seconds``."""
    total = [0] * streams
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = Client(daemon.port)
        texts = prompts()
        i = k
        try:
            while time.perf_counter() < stop:
                n, _, _ = one(conn, daemon.name, texts[i % len(texts)], tokens, True)
                total[k] += n
                i += 1
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total) / (time.perf_counter() - started)


def run(work: Path, size: str, tokens: int, requests: int) -> dict[str, Any]:
    folder = build(work, size)
    raw = Raw(folder)
    daemon = Daemon(work, folder, f"bench-{size}")
    try:
        interleaved(raw, daemon, tokens, 3)  # warm the connection and the caches
        measured = interleaved(raw, daemon, tokens, requests)
        one_stream = concurrent(daemon, tokens, 1, 3.0)
        eight = concurrent(daemon, tokens, 8, 3.0)
    finally:
        daemon.stop()
    return {"size": size, **measured, "one_stream": one_stream, "eight_streams": eight}


def report(result: dict[str, Any]) -> None:
    size = result["size"]
    goals = GOALS[size]
    r = result["raw"]
    print(f"\n{size} model, {r['tokens_per_s']:.0f} tokens/s raw, first token "
          f"{r['ttft_ms']:.2f} ms raw")
    print(f"{'measure':<34} {'ours':>10} {'raw':>10} {'ratio':>7}  goal")
    for kind, label in (("plain", "tokens/s, not streamed"), ("stream", "tokens/s, streamed")):
        o = result[kind]["tokens_per_s"]
        ratio = o / r["tokens_per_s"]
        met = "met" if ratio >= goals[kind] else "NOT met"
        print(f"{label:<34} {o:>10.0f} {r['tokens_per_s']:>10.0f} {ratio:>7.2f}  "
              f">= {goals[kind]:.2f} ({met})")
    ttft = result["stream"]["ttft_ms"]
    over = ttft - r["ttft_ms"]
    print(f"{'first token p50, ms (streamed)':<34} {ttft:>10.2f} {r['ttft_ms']:>10.2f} "
          f"{'+' if over >= 0 else ''}{over:>6.2f}  <= raw + 2 ms "
          f"({'met' if over <= 2.0 else 'NOT met'})")
    parts = result["parts"]
    print(f"(not streamed, medians: raw {parts['raw_ms']:.2f} ms a request; the client waited "
          f"{parts['client_ms']:.2f} ms, of which the daemon's figures: from the request's "
          f"body to its last token {parts['e2e_ms']:.2f} ms (to the model's process and its "
          f"slot {parts['queue_ms']:.2f}, generating {parts['generation_ms']:.2f}); the other "
          f"{parts['client_ms'] - parts['e2e_ms']:.2f} ms: reading the request, and the answer "
          "from the last token on (the daemon woken, the output checks, the JSON, its write "
          "and the client's read))")
    ratio = result["eight_streams"] / result["one_stream"]
    print(f"{'8 streams / 1 stream, tokens/s':<34} {result['eight_streams']:>10.0f} "
          f"{result['one_stream']:>10.0f} {ratio:>7.2f}  >= 2 where the runtime batches "
          f"({'met' if ratio >= 2 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=60, help="Tokens per answer.")
    parser.add_argument("--requests", type=int, default=30, help="Requests per measurement.")
    parser.add_argument("--no-small", action="store_true",
                        help="Skip the larger model (it takes a minute or two to build).")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "appliance-bench-llm",
                        help="Where the models are built and kept between runs.")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Rounds per model; with more than one, the median ratio of each "
                             "goal and how many rounds met it are printed last.")
    parser.add_argument("--stream-hold", type=int, default=0,
                        help="guardrails.stream_hold_chars of the daemon (default 0: the "
                             "serving path alone; 128 is the appliance's default).")
    parser.add_argument("--profile", type=Path,
                        help="Profile the daemon's process (cProfile) and write its statistics "
                             "here when it stops (each model's daemon overwrites the last).")
    parser.add_argument("--serve-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        os.environ[PROFILE_ENV] = str(args.profile.resolve())
    if args.serve_child:
        serve_child(*args.serve_child)
        return
    global STREAM_HOLD
    STREAM_HOLD = args.stream_hold
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = ["tiny"] if args.no_small else ["tiny", "small"]
    for size in sizes:
        rounds = []
        for _ in range(max(1, args.repeat)):
            rounds.append(run(args.work, size, args.tokens, args.requests))
            report(rounds[-1])
        if len(rounds) > 1:
            summary(rounds)


def ratios(result: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    goals = GOALS[result["size"]]
    raw = result["raw"]
    plain = result["plain"]["tokens_per_s"] / raw["tokens_per_s"]
    stream = result["stream"]["tokens_per_s"] / raw["tokens_per_s"]
    over = result["stream"]["ttft_ms"] - raw["ttft_ms"]
    scale = result["eight_streams"] / result["one_stream"]
    return {"not streamed / raw": (plain, plain >= goals["plain"]),
            "streamed / raw": (stream, stream >= goals["stream"]),
            "first token over raw, ms": (over, over <= 2.0),
            "8 streams / 1 stream": (scale, scale >= 2.0)}


def summary(rounds: list[dict[str, Any]]) -> None:
    print(f"\n{rounds[0]['size']} model over {len(rounds)} rounds: median, rounds that met "
          "the goal")
    per = [ratios(r) for r in rounds]
    for name in per[0]:
        values = [p[name][0] for p in per]
        met = sum(p[name][1] for p in per)
        print(f"  {name:<28} {statistics.median(values):>7.2f}   {met}/{len(rounds)}")


if __name__ == "__main__":
    main()
