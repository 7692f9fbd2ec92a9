"""A runtime in a child process of its own, behind the same interface.

onnxruntime-genai holds Python's GIL while it computes a step, so a model generating
on a thread of the serving daemon would keep the event loop from running for the
interpreter's whole switch interval (5 ms) at a time: every other request, tabular
ones included, and every streamed token would wait. ``ProcessRuntime`` runs the real
runtime (``GenaiRuntime``, or a class with its interface) in a child process and
speaks to it over a pipe, in messages of plain values marshalled (not pickled):

- the parent encodes prompts with the model's own tokenizer (Hugging Face's
  ``tokenizer.json``, read by ``tokenizers``) and sends the token ids;
- the child sends the text of streamed answers (at most every ``STREAM_FLUSH_S``, a
  first token at once), and at the end of each generation what it cost (tokens, times,
  device-seconds, finish reason) and, for an answer not streamed, its whole text: one
  message per answer not streamed;
- the serving daemon's event loop (or, without one, a reader thread) reads the pipe
  when it has a message and hands it to each request's sink.

The child exits when the parent closes the pipe or dies.
"""

from __future__ import annotations

import importlib
import logging
import marshal
import multiprocessing
import select
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from appliance.errors import BadInput, OperationFailed, Unavailable
from appliance.llm.runtime import ERROR, Generation, Sampling

log = logging.getLogger("appliance.llm")

START_TIMEOUT_S = 300.0
# How often the child sends streamed text: each message wakes the serving loop, and on a
# small model a token takes a tenth of that.
STREAM_FLUSH_S = 0.001
POLL_S = 0.0002  # how often a busy child looks for new requests and cancellations


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class ProcessRuntime:
    """See the module's docstring."""

    def __init__(self, folder: str | Path, *, runtime: type | None = None,
                 cuda: bool = False, queue_capacity: int = 64,
                 eos_token_ids: list[int] | None = None, context_length: int | None = None,
                 name: str = "llm", loop: Any = None, intra_op_threads: int = 0) -> None:
        """``loop``: an asyncio event loop to read the child's messages on (its sinks
        are then called there); else a thread of its own reads them."""
        from tokenizers import Tokenizer

        from appliance.llm.runtime import GenaiRuntime

        self.name = name
        self.device = "cuda" if cuda else "cpu"
        self.queue_capacity = queue_capacity
        self._tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        options = {"cuda": cuda, "queue_capacity": queue_capacity,
                   "eos_token_ids": eos_token_ids, "context_length": context_length,
                   "name": name, "intra_op_threads": intra_op_threads}
        self._process = ctx.Process(
            target=child_main, name=f"appliance-llm {name}", daemon=True,
            args=(child, str(folder), _class_path(runtime or GenaiRuntime), options))
        self._process.start()
        child.close()
        if not self._conn.poll(START_TIMEOUT_S):
            self._process.kill()
            raise OperationFailed(f"{name}: the model's process did not start in "
                                  f"{START_TIMEOUT_S:.0f} s")
        try:
            hello = _recv(self._conn)
        except EOFError:
            raise OperationFailed(f"{name}: the model's process exited while loading") from None
        if hello[0] == "error":
            self._process.join(10)
            raise OperationFailed(hello[1])
        _, self.context_length, self.slots = hello
        self._send_lock = threading.Lock()
        self._outstanding: dict[int, Generation] = {}
        self._next = 0
        self._closing = False
        self._dead: str | None = None
        self._loop: Any = None
        self._reader: threading.Thread | None = None
        self._pending = select.poll()  # cheaper than Connection.poll, which builds a selector
        self._pending.register(self._conn.fileno(), select.POLLIN)
        if loop is not None:
            # The event loop reads the pipe itself: one wake-up per message, not two.
            self._loop = loop
            loop.call_soon_threadsafe(loop.add_reader, self._conn.fileno(), self._readable)
        else:
            self._reader = threading.Thread(target=self._read, name=f"llm-{name}-reader",
                                            daemon=True)
            self._reader.start()

    # ---- the interface ---------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text).ids)

    def submit(self, generation: Generation) -> None:
        if len(generation.prompt_ids) + generation.sampling.max_tokens > self.context_length:
            raise BadInput("the prompt and max_tokens exceed the context")
        with self._send_lock:
            if self._dead is not None:
                raise Unavailable(f"model '{self.name}' is not running: {self._dead}")
            if self._closing:
                raise Unavailable(f"model '{self.name}' is being unloaded; retry")
            if len(self._outstanding) >= self.slots + self.queue_capacity:
                raise Unavailable(f"model '{self.name}' has {self.queue_capacity} requests "
                                  "waiting already (llm.queue_capacity); retry")
            self._next += 1
            key = self._next
            generation._handle = key
            self._outstanding[key] = generation
            s = generation.sampling
            stream = getattr(generation.sink, "stream", True)
            try:
                _send(self._conn, ("submit", key, list(map(int, generation.prompt_ids)),
                                 (s.max_tokens, s.temperature, s.top_p, s.seed, s.stop,
                                  s.min_tokens), bool(stream), generation.submitted))
            except OSError as exc:  # the process died and its end of the pipe is closed
                del self._outstanding[key]
                raise Unavailable(f"model '{self.name}' is not running: its process has "
                                  f"gone ({exc.strerror or exc}); retry") from exc

    def cancel(self, generation: Generation) -> None:
        generation.cancelled = True
        with self._send_lock:
            key = generation._handle
            if key in self._outstanding and self._dead is None:
                _send(self._conn, ("cancel", key))

    @property
    def alive(self) -> bool:
        """False once the model's process has exited unasked (it crashed or was killed)."""
        return self._dead is None and (self._closing or self._process.is_alive())

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def load(self) -> tuple[int, int]:
        n = len(self._outstanding)
        return min(n, self.slots), max(0, n - self.slots)

    def close(self, timeout: float = 10.0) -> None:
        with self._send_lock:
            if self._closing:
                return
            self._closing = True
            if self._dead is None:
                try:
                    _send(self._conn, ("close",))
                except OSError:
                    pass
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        if self._reader is not None:
            self._reader.join(5)
        elif self._loop is not None and not self._loop.is_closed():
            done = threading.Event()

            def detach() -> None:
                self._loop.remove_reader(self._conn.fileno())
                self._drain()
                self._gone()
                done.set()

            try:
                if _on_loop(self._loop):
                    detach()
                else:
                    self._loop.call_soon_threadsafe(detach)
                    done.wait(5)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._conn.close()

    # ---- the reader thread -----------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = _recv(self._conn)
            except (EOFError, OSError):
                break
            if not self._dispatch(message):
                break
        self._gone()

    def _readable(self) -> None:
        """On the event loop: every message the pipe holds now."""
        try:
            while self._pending.poll(0):
                if not self._dispatch(_recv(self._conn)):
                    raise EOFError
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            self._gone()

    def _drain(self) -> None:
        try:
            while self._pending.poll(0):
                self._dispatch(_recv(self._conn))
        except (EOFError, OSError):
            pass

    def _dispatch(self, message: Any) -> bool:
        """Hand one message's tokens and finished generations to their sinks; False at
        the child's last message."""
        if message[0] == "step":
            for key, text in message[1]:
                generation = self._outstanding.get(key)
                if generation is not None:
                    generation.text += text
                    generation.sink.tokens(generation, text)
            for key, state in message[2]:
                generation = self._outstanding.pop(key, None)
                if generation is not None:
                    _finish(generation, state)
            return True
        return message[0] != "closed"

    def _gone(self) -> None:
        """The child is gone: nothing outstanding will be answered by it."""
        with self._send_lock:
            if not self._closing:
                self._dead = "the model's process exited"
                log.error("%s: the model's process exited", self.name)
            left = list(self._outstanding.values())
            self._outstanding.clear()
        for generation in left:
            generation.finish_reason = ERROR
            generation.retryable = True
            generation.error = self._dead or "the model was unloaded before this request ran"
            generation.ended = time.perf_counter()
            generation.sink.finished(generation)


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    """One message: plain values (numbers, strings, lists, tuples, dicts, None), marshalled,
    in one length-prefixed write; cheaper than pickling them."""
    conn.send_bytes(marshal.dumps(message))


def _recv(conn: Connection) -> Any:
    return marshal.loads(conn.recv_bytes())


def _on_loop(loop: Any) -> bool:
    import asyncio

    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _finish(generation: Generation, state: dict[str, Any]) -> None:
    for key in ("admitted", "first_token", "last_token", "completion_tokens", "gaps",
                "device_s", "finish_reason", "error", "path"):
        setattr(generation, key, state[key])
    if not getattr(generation.sink, "stream", True):
        generation.text = state["text"]
    generation.ended = state["ended"]
    generation.sink.finished(generation)


# ---- the child process ---------------------------------------------------------------


class _Forward:
    """The child's sink: collects what each step produced, sent once per step."""

    def __init__(self, outbox: list[Any], finished: list[Any], key: int, stream: bool,
                 urgent: list[bool]) -> None:
        self.urgent = urgent
        self.outbox = outbox
        self.done = finished
        self.key = key
        self.stream = stream

    def tokens(self, generation: Generation, text: str) -> None:
        if self.stream:
            self.outbox.append((self.key, text))
            if generation.completion_tokens <= 1:
                self.urgent[0] = True  # a first token goes out at once

    def finished(self, generation: Generation) -> None:
        g = generation
        self.done.append((self.key, {
            "admitted": g.admitted, "first_token": g.first_token, "last_token": g.last_token,
            "completion_tokens": g.completion_tokens, "gaps": g.gaps, "device_s": g.device_s,
            "finish_reason": g.finish_reason, "error": g.error, "path": g.path,
            "ended": g.ended, "text": "" if self.stream else g.text}))


def child_main(conn: Connection, folder: str, runtime_path: str,
               options: dict[str, Any]) -> None:
    """The child: load the model, answer the parent until it closes the pipe (which it
    also does by dying: the pipe's end then reads EOF). One thread does it all: between
    steps it takes what the parent sent, and after each step it sends what came of it."""
    module, _, qualname = runtime_path.partition(":")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        runtime = cls(folder, threaded=False, **options)
    except Exception as exc:  # noqa: BLE001 - whatever stops the load is the parent's answer
        _send(conn, ("error", f"{options.get('name')}: {exc}"))
        conn.close()
        return
    _send(conn, ("ready", runtime.context_length,
                 1 + int(getattr(runtime, "engine_capacity", 0))))
    outbox: list[Any] = []
    finished: list[Any] = []
    urgent = [False]
    last_sent = [0.0]
    generations: dict[int, Generation] = {}

    def send(force: bool = False) -> None:
        """Streamed text goes out every STREAM_FLUSH_S (each message wakes the parent);
        a first token, a finished generation, or an idle model sends at once."""
        if not (outbox or finished):
            return
        now = time.perf_counter()
        if finished or urgent[0] or force or now - last_sent[0] >= STREAM_FLUSH_S:
            for key, _state in finished:
                generations.pop(key, None)
            _send(conn, ("step", outbox, finished))
            outbox.clear()
            finished.clear()
            urgent[0] = False
            last_sent[0] = now

    def handle(message: Any) -> bool:
        """False on 'close'."""
        kind = message[0]
        if kind == "submit":
            _, key, ids, s, stream, submitted = message
            sampling = Sampling(max_tokens=s[0], temperature=s[1], top_p=s[2], seed=s[3],
                                stop=tuple(s[4]), min_tokens=s[5])
            generation = Generation(list(ids), sampling,
                                    _Forward(outbox, finished, key, stream, urgent),
                                    submitted=submitted)
            generations[key] = generation
            try:
                runtime.submit(generation)
            except (BadInput, Unavailable) as exc:
                generation.error = str(exc)
                generation.finish_reason = ERROR
                generation.ended = time.perf_counter()
                generation.sink.finished(generation)
        elif kind == "cancel":
            found = generations.get(message[1])
            if found is not None:
                runtime.cancel(found)
        elif kind == "close":
            return False
        return True

    # One poll object, asked between steps: Connection.poll builds a selector per call,
    # which costs as much as a step of a small model.
    pending = select.poll()
    pending.register(conn.fileno(), select.POLLIN)
    running = True
    try:
        polled = 0.0
        while running:
            if runtime.busy():
                # The pipe is looked at every POLL_S while generating, not every step: a
                # step of a small model is shorter than the look.
                now = time.perf_counter()
                if now - polled >= POLL_S:
                    polled = now
                    while running and pending.poll(0):
                        running = handle(_recv(conn))
                runtime.step()
            else:
                running = handle(_recv(conn))
            send(force=not runtime.busy())
        runtime.close()  # what runs finishes; what waits is refused
        send(force=True)
        _send(conn, ("closed",))
    except (EOFError, OSError, ValueError):
        pass  # the parent went away
    conn.close()
