"""The transport of the serving daemon: connections, timeouts, busy polling, the main.

``appliance serve`` runs the application through ``serve()``: HTTP/1.1 on
asyncio, one ``asyncio.Protocol`` per connection, parsed by httptools (llhttp,
the parser uvicorn uses), which refuses what a proxy and this server could read
differently: two Content-Length headers, whitespace before a colon, obs-fold,
bare LF, Transfer-Encoding with Content-Length (400, then close) and versions
other than HTTP/1.0 and 1.1 (505). It hands each request to the application's
one adapter (``ServingApp.request``) and skips the ASGI message round trips
(faster on small models).

A connection must send its request line and headers within
``serving.header_timeout_s`` and may pause no longer than that inside a body;
an idle keep-alive connection is closed after ``serving.keepalive_timeout_s``.
Past ``serving.max_connections`` open connections a new one is answered 503 and
closed; the cap is fitted to the open-file limit, and the rare ``accept()`` that
still fails for want of descriptors is logged once per interval, not once per try.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import gc
import logging
import resource
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools

from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.errors import ApplianceError, Unavailable
from appliance.queue import liveness
from appliance.serving.batcher import Tally
from appliance.serving.http.app import (
    JSON,
    Headers,
    Response,
    ServingApp,
    json_response,
)
from appliance.storage.home import Home
from appliance.system import sdnotify

log = logging.getLogger("appliance.serving")

BUSY_POLL_US = 100  # serving.busy_poll_us's default
FD_RESERVE = 64  # descriptors kept for model files, databases and logs
ACCEPT_LOG_INTERVAL_S = 10.0
REFUSED_LINGER_S = 0.5  # how long a connection refused at the cap stays half-closed


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 60.0
    max_connections: int = 4096
    max_header_count: int = 100
    max_header_bytes: int = 65536

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(
            header_timeout_s=config["serving.header_timeout_s"],
            keepalive_timeout_s=config["serving.keepalive_timeout_s"],
            max_connections=config["serving.max_connections"],
            max_header_count=config["serving.max_header_count"],
            max_header_bytes=config["serving.max_header_bytes"],
        )

    def fitted(self) -> Limits:
        """The connection cap lowered, where needed, to fit the open-file limit."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self
        room = max(1, soft - FD_RESERVE)
        if self.max_connections <= room:
            return self
        log.warning("serving.max_connections %d lowered to %d to fit the open-file limit "
                    "(%d); raise LimitNOFILE to keep more", self.max_connections, room, soft)
        return Limits(self.header_timeout_s, self.keepalive_timeout_s, room,
                      self.max_header_count, self.max_header_bytes)


class BusyPoll:
    """Keeps the event loop polling (never sleeping) for a while after the last activity.

    A request that arrives while the loop sleeps in epoll waits for the wake-up of an idle
    CPU, which on a virtual machine costs about as much as the request itself. For
    ``window_us`` after each ``touch()`` a callback re-queues itself, so every turn of the
    loop polls its sockets without blocking; then the loop sleeps as usual. Like
    onnxruntime's spinning threads, it spends CPU only while traffic flows.

    It stops while ``threads`` (the engine's count of jobs on batcher threads) is above
    zero: a polling loop holds the GIL all but a moment each turn, and a thread woken to run
    a slow model waited out the window for it (about 100 us more per hand-off, measured by
    ``tests/bench/bench_handoff.py --spin``). The answer's write touches it again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, window_us: int,
                 threads: Tally | None = None) -> None:
        self._loop = loop
        self._window = window_us / 1e6
        self._last = 0.0
        self._active = False
        self._threads = threads if threads is not None else Tally()

    def touch(self) -> None:
        if self._window <= 0:
            return
        self._last = time.perf_counter()
        if not self._active:
            self._active = True
            self._loop.call_soon(self._spin)

    @property
    def active(self) -> bool:
        return self._active

    def _spin(self) -> None:
        if not self._threads.n and time.perf_counter() - self._last < self._window:
            self._loop.call_soon(self._spin)
        else:
            self._active = False


class ServerState:
    """What every connection of one server shares: its limits, its open connections, the
    busy poll, and the counts of refused connections and timeouts."""

    def __init__(self, app: ServingApp, poll: Any, limits: Limits) -> None:
        self.app = app
        self.poll = poll
        self.limits = limits
        self.connections: set[Connection] = set()
        self.refused = 0  # connections answered 503 at the cap
        self.timed_out = 0  # connections closed by a timeout
        self.accept_errors = 0
        self._accept_unlogged = 0
        self._accept_logged_at = -ACCEPT_LOG_INTERVAL_S

    def accept_failed(self, exc: OSError) -> None:
        """An ``accept()`` that failed for want of descriptors or memory: counted, and
        logged at most once per ``ACCEPT_LOG_INTERVAL_S`` with how many failed."""
        self.accept_errors += 1
        self._accept_unlogged += 1
        now = time.monotonic()
        if now - self._accept_logged_at >= ACCEPT_LOG_INTERVAL_S:
            log.error("accept() failed %d times (last: %s); %d connections open of %d allowed",
                      self._accept_unlogged, exc, len(self.connections),
                      self.limits.max_connections)
            self._accept_unlogged = 0
            self._accept_logged_at = now


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Refuse(Exception):
    """Raised from a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request answered at a time; pipelined requests wait
    in a bounded buffer (reading pauses past it)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.app = state.app
        self.poll = state.poll
        self.limits = state.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client: str | None = None
        self.closing = False
        self.paused = False
        self.busy = False  # a request is being answered
        self.held = bytearray()  # bytes read while busy, parsed after the answer
        self.ready: collections.deque[tuple[str, bytes, dict[bytes, bytes], bytes, bool]] = (
            collections.deque())
        self.task: asyncio.Task[None] | None = None  # answering the request in progress
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind = ""
        self.deadline: float | None = None
        self.last_request = False  # an Upgrade or the client's EOF: close after this answer
        # the request being read
        self.in_head = False
        self.head_bytes = 0
        self.head_size = 0
        self.refused = False  # over the connection cap: answered 503, input ignored
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.header_count = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self.gone: asyncio.Event | None = None  # set when the connection closes
        self.writable: asyncio.Event | None = None  # cleared while the transport's buffer is full

    # ---- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream server's: it writes
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) and peer else None
        if len(self.state.connections) >= self.limits.max_connections:
            self.state.refused += 1
            self.refused = True
            status, headers, body = json_response(
                503, {"error": "the server has as many connections as it keeps; retry"},
                [(b"retry-after", b"1"), (b"connection", b"close")])
            lines = [b"HTTP/1.1 503 Service Unavailable", *(k + b": " + v for k, v in headers),
                     b"content-length: %d" % len(body)]
            transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            # Half-close, so the client reads the answer before the reset that closing with
            # its request unread would send; the descriptor goes a moment later.
            if transport.can_write_eof():
                transport.write_eof()
            self.closing = True
            asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)
            return
        self.state.connections.add(self)
        self._arm("idle", self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        if self.gone is not None:
            self.gone.set()
        if self.writable is not None:
            self.writable.set()
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.Event()
        self.writable.clear()

    def resume_writing(self) -> None:
        if self.writable is not None:
            self.writable.set()

    def eof_received(self) -> bool:
        """The client sent all it will: answer what was read in full, then close."""
        self.last_request = True
        if self.busy or self.ready:
            return True  # keep the transport open to write the answer
        return False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.poll.touch()
        if self.busy or self.ready:
            self.held += data
            if (len(self.held) > self.app.max_body_bytes + self.limits.max_header_bytes
                    and self.transport is not None and not self.paused):
                # A client pipelining more than one request can hold: stop reading until the
                # one in progress is answered, so a connection never buffers without bound.
                self.transport.pause_reading()
                self.paused = True
            return
        self._feed(data)

    # ---- parsing ----------------------------------------------------------

    def _feed(self, data: bytes | bytearray) -> None:
        if self.closing or self.transport is None:
            return
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refuse = exc.__context__ if isinstance(exc.__context__, _Refuse) else None
            if refuse is None:
                raise
            self._fail(refuse.status, refuse.message)
            return
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here: answer what was read, then close.
            self.last_request = True
        except httptools.HttpParserError as exc:
            text = str(exc) or type(exc).__name__
            status = 505 if text.startswith("Invalid HTTP version") else 400
            self._fail(status, f"malformed HTTP request: {text}")
            return
        if self.in_head:  # a head still unfinished: count what it holds so far
            self.head_bytes = self.head_bytes + len(data) if was_in_head else len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._fail(431, f"request line and headers are larger than "
                                f"{self.limits.max_header_bytes} bytes")
                return
        self._next()

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0  # bytes read of a head still unfinished
        self.head_size = 0  # bytes of the parsed request line and headers
        self.url = b""
        self.headers = {}
        self.header_count = 0
        self.body = []
        self.body_size = 0
        self._arm("head", self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.limits.max_header_bytes:
            raise _Refuse(431, f"request line and headers are larger than "
                               f"{self.limits.max_header_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_header_count:
            raise _Refuse(431, f"more than {self.limits.max_header_count} header lines")
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limits.max_header_bytes:
            raise _Refuse(431, f"request line and headers are larger than "
                               f"{self.limits.max_header_bytes} bytes")
        key = name.lower()
        value = value.strip(b" \t")
        if key in self.headers and key != b"content-length":
            self.headers[key] += b", " + value
        else:
            self.headers[key] = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.parser.get_http_version() not in ("1.1", "1.0"):
            raise _Refuse(505, "only HTTP/1.1 and HTTP/1.0 are served")
        length = self.headers.get(b"content-length")
        if length is not None:
            refused = self.app.too_large(int(length))
            if refused is not None:
                raise _Refuse(413, f"request body is larger than {self.app.max_body_bytes} bytes")
            if int(length) == 0:
                self._disarm()
                return
        elif b"transfer-encoding" not in self.headers:
            self._disarm()
            return
        # A body follows: a pause inside it is held to the header timeout too.
        self._arm("body", self.limits.header_timeout_s)
        if (self.headers.get(b"expect", b"").lower() == b"100-continue"
                and self.transport is not None):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.app.max_body_bytes:
            raise _Refuse(413, f"request body is larger than {self.app.max_body_bytes} bytes")
        self.body.append(body)
        self._arm("body", self.limits.header_timeout_s)

    def on_message_complete(self) -> None:
        self._disarm()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.ready.append((self.parser.get_method().decode("ascii", "replace"), self.url,
                           self.headers, body, self.parser.should_keep_alive()))
        self.body = []

    # ---- answering --------------------------------------------------------

    def _next(self) -> None:
        if self.busy or not self.ready or self.transport is None or self.closing:
            return
        method, target, headers, body, keep = self.ready.popleft()
        if self.last_request and not self.ready:
            keep = False
        self.busy = True
        # Handed to the application now, not when the task starts, so that it counts in
        # flight at once: requests read in the same turn of the loop then merge into one run.
        if self.gone is None:
            self.gone = asyncio.Event()
        answer = self.app.request(method, target, headers, body, self.client, self.gone)
        self.task = asyncio.get_running_loop().create_task(self._answer(method, answer, keep))

    async def _answer(self, method: str, answer: Awaitable[Response], keep: bool) -> None:
        streamed = False
        try:
            status, response_headers, response = await answer
            streamed = not isinstance(response, (bytes, bytearray))
            if streamed:
                keep = await self._stream(status, response_headers, response, keep)
        finally:
            self.busy = False
        if self.transport is None:
            return
        if not streamed:
            if status >= 500 and status != 503:
                keep = False
            if self.last_request and not self.ready:
                keep = False
            self._write(status, response_headers, response, keep, method == "HEAD")
        elif not keep:
            self.closing = True
            self._disarm()
            self.transport.close()
        if not keep:
            return
        if self.paused:
            self.transport.resume_reading()
            self.paused = False
        if self.ready:
            self._next()
            return
        self._arm("idle", self.limits.keepalive_timeout_s)
        if self.held:
            data = bytes(self.held)
            self.held.clear()
            self._feed(data)

    def _write(self, status: int, headers: Headers, body: bytes, keep: bool,
               head: bool = False) -> None:
        if self.transport is None:
            return
        self.poll.touch()  # the client's next request may be close behind this answer
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown"))]
        lines.extend(k + b": " + v for k, v in headers)
        lines.append(b"content-length: %d" % len(body))
        if not keep:
            lines.append(b"connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body))
        if not keep:
            self.closing = True
            self._disarm()
            self.transport.close()

    async def _stream(self, status: int, headers: Headers, body: Any, keep: bool) -> bool:
        """Send an answer as it is made, in chunks; False when the connection must close
        after it. A client that goes away ends it: the body is closed (``aclose``), which
        stops the work behind it."""
        if self.transport is None:
            await body.aclose()
            return False
        chunked = self.parser.get_http_version() == "1.1"
        keep = keep and chunked and not (self.last_request and not self.ready)
        lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown"))]
        lines.extend(k + b": " + v for k, v in headers)
        lines.append(b"transfer-encoding: chunked" if chunked else b"connection: close")
        if chunked and not keep:
            lines.append(b"connection: close")
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        try:
            async for chunk in body:
                if self.transport is None or self.transport.is_closing():
                    return False
                if chunk:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk)
                                         if chunked else chunk)
                    self.poll.touch()
                if self.writable is not None and not self.writable.is_set():
                    await self.writable.wait()  # the client reads slower than we write
        finally:
            await body.aclose()
        if self.transport is None or self.transport.is_closing():
            return False
        if chunked:
            self.transport.write(b"0\r\n\r\n")
        return keep

    def _fail(self, status: int, message: str, extra: Headers | None = None) -> None:
        response: Response = self.app.error_body(self.url, status, message, extra)
        self.ready.clear()
        self._write(status, response[1], response[2], keep=False)

    # ---- timeouts ---------------------------------------------------------

    # One timer per connection at most, moved lazily: arming sets a deadline and schedules a
    # call only when none is due by then, so a busy keep-alive connection schedules nothing
    # per request; an early call finds the deadline moved and waits again.

    def _arm(self, kind: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        self.timer_kind = kind
        self.deadline = deadline
        if self.timer is None or self.timer.when() > deadline:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = loop.call_at(deadline, self._expired)

    def _disarm(self) -> None:
        self.deadline = None
        self.timer_kind = ""

    def _expired(self) -> None:
        self.timer = None
        if self.deadline is None or self.transport is None or self.closing or self.busy:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._expired)
            return
        self.state.timed_out += 1
        if self.timer_kind in ("head", "body"):
            self._fail(408, "the request was not sent in time")
        else:  # idle between requests: close quietly
            self.closing = True
            self.transport.close()


def _exception_handler(state: ServerState) -> Callable[[asyncio.AbstractEventLoop,
                                                         dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            state.accept_failed(exc)  # asyncio itself retries accept() a second later
            return
        loop.default_exception_handler(context)

    return handle


def freeze_heap() -> None:
    """Collect once, then move every object alive after start-up (modules, models, the
    configuration) out of the cyclic collector's sight (``gc.freeze``).

    Without this, each full collection while serving walks the tens of thousands of
    objects start-up left behind, a pause that lands on whichever requests are in hand (a
    few tens of ms on a small machine, seen as the p99 at 32 connections); after it, a
    collection walks only what requests made. Frozen objects are still freed when their
    last reference goes; only a cycle among them is kept, and start-up leaves none that
    grows."""
    gc.collect()
    gc.freeze()


async def serve(app: ServingApp, host: str, port: int, *, stop: asyncio.Event,
                on_ready: Callable[[int], None] | None = None,
                limits: Limits | None = None,
                on_state: Callable[[ServerState], None] | None = None,
                freeze: bool = False) -> None:
    """Serve until ``stop`` is set; ``on_ready`` gets the bound port (useful with port 0),
    ``on_state`` the connections' shared state (for tests and benchmarks). ``freeze``: the
    process is the daemon's own, so the heap left by start-up is frozen (``freeze_heap``)
    once the models are loaded."""
    loop = asyncio.get_running_loop()
    await app.startup()
    if freeze:
        freeze_heap()
    if limits is None:
        limits = Limits.from_config(app.config) if app.config is not None else Limits()
    state = ServerState(app, BusyPoll(loop, app.busy_poll_us, app.engine.on_threads),
                        limits.fitted())
    if on_state is not None:
        on_state(state)
    loop.set_exception_handler(_exception_handler(state))
    server = await loop.create_server(lambda: Connection(state), host, port, backlog=1024,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    log.info("serving the V2 inference protocol and the OpenAI API (/v1) on http://%s:%d", host, bound)
    if on_ready is not None:
        on_ready(bound)
    try:
        await stop.wait()
    finally:
        server.close()
        for conn in list(state.connections):
            if conn.transport is not None and not conn.busy:
                conn.transport.close()
        await server.wait_closed()
        await app.shutdown()


def run(app: ServingApp, host: str, port: int) -> None:
    """The daemon's main loop: SIGTERM and SIGINT only set the stop flag."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        interval = sdnotify.watchdog_interval()
        if interval:
            loop.create_task(_watchdog(interval))
        if app.home is not None:
            loop.create_task(_heartbeat(app, app.home))

        def ready(_port: int) -> None:
            sdnotify.notify("READY=1")

        await serve(app, host, port, stop=stop, on_ready=ready, freeze=True)
        sdnotify.notify("STOPPING=1")
        if app.home is not None:
            await asyncio.to_thread(write_heartbeat, app.home, None, app)

    asyncio.run(main())


HEARTBEAT_S = 15.0


def write_heartbeat(home: Home, started_at: str | None, app: ServingApp) -> None:
    """Write (or, with no ``started_at``, clear) the daemon's row in ``heartbeats``, naming
    the GPUs its sessions use, so the console shows serving up and what holds each GPU."""
    with home.db() as db:
        if started_at is None:
            liveness.clear(db, "serving")
            return
        providers = list(app.engine.providers or ())
        on_gpu = "CUDAExecutionProvider" in providers
        liveness.beat(db, "serving", started_at,
                      {"providers": providers, "gpu_indices": [0] if on_gpu else []})


async def _heartbeat(app: ServingApp, home: Home) -> None:
    started_at = now_iso()
    while True:
        try:
            await asyncio.to_thread(write_heartbeat, home, started_at, app)
        except sqlite3.Error as exc:  # a busy or locked database: try at the next beat
            log.warning("serving heartbeat not written: %s", exc)
        await asyncio.sleep(HEARTBEAT_S)


async def _watchdog(every: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(every)


class ServerThread:
    """The built-in server on a thread of its own: for tests, benchmarks and embedding."""

    def __init__(self, app: ServingApp, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.limits = limits
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.state: ServerState | None = None
        self._thread = threading.Thread(target=self._main, name="serving-http", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(port: int) -> None:
                self.port = port
                self._ready.set()

            def keep(state: ServerState) -> None:
                self.state = state

            await serve(self.app, self.host, self.port, stop=self._stop, on_ready=ready,
                        limits=self.limits, on_state=keep)

        try:
            asyncio.run(main())
        except (ApplianceError, OSError) as exc:
            self._error = exc
            self._ready.set()

    def start(self, timeout: float = 60.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise Unavailable("the serving thread did not start in time")
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)


__all__ = ["BUSY_POLL_US", "JSON", "BusyPoll", "Connection", "Limits", "ServerState",
           "ServerThread", "freeze_heap", "run", "serve", "write_heartbeat"]
