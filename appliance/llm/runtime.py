"""The generation runtime: a small engine interface, and onnxruntime-genai behind it.

The serving layer sees only ``Runtime``: ``encode`` a prompt, ``submit`` a
``Generation`` with its sampling settings and a ``Sink``, ``cancel`` it. Any
backend that keeps that contract (a site's own llama.cpp server on loopback, say)
can stand in without a change to the HTTP layer.

``GenaiRuntime`` runs one onnxruntime-genai model on one thread of its own, so
generation never blocks the event loop. Requests wait in a bounded queue
(``Unavailable`` when full) and are admitted in arrival order. A request that
finds the model idle runs on a ``Generator`` of its own (the fastest path for one
stream); those that arrive while it runs go to onnxruntime-genai's ``Engine``,
which batches them together (continuous batching, up to its configured batch
size). Each turn of the thread gives every running stream one step, so a long
answer never starves a short one.

Each step's wall time is shared among the sequences in it by the tokens each
processed (a prompt counts its tokens at its first step): that is the request's
device time, GPU-seconds where the model runs on CUDA, CPU-seconds elsewhere.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.errors import BadInput, OperationFailed, Unavailable

log = logging.getLogger("appliance.llm")

# Why a generation ended, in OpenAI's words where it has them.
STOP, LENGTH, CANCELLED, ERROR = "stop", "length", "cancelled", "error"

# Making a generator costs about as much as ten tokens of a small model: the single path
# keeps up to this many between requests, for a model whose cache for the whole context
# is so small that this many of them take no more than IDLE_CACHE_BYTES.
IDLE_GENERATORS = 8
IDLE_CACHE_BYTES = 64 << 20
GENERATOR_LENGTH_STEP = 16  # tokens


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0  # the end-of-sequence token is masked until this many


class Sink(Protocol):
    """Where a generation's output goes; called on the runtime's thread."""

    def tokens(self, generation: Generation, text: str) -> None: ...

    def finished(self, generation: Generation) -> None: ...


@dataclass(eq=False)
class Generation:
    """One request's generation, and what it cost."""

    prompt_ids: list[int]
    sampling: Sampling
    sink: Sink
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float | None = None  # left the queue
    first_token: float | None = None
    last_token: float | None = None
    ended: float | None = None
    completion_tokens: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds between tokens
    device_s: float = 0.0  # this request's share of the steps it was in
    finish_reason: str | None = None
    error: str | None = None
    retryable: bool = False  # the error is the model's, not the request's (503, not 500)
    text: str = ""  # generated so far (only what was sent, once stop strings are checked)
    cancelled: bool = False
    path: str = ""  # 'single' (a generator of its own) or 'batched' (the engine)
    # the backend's own state
    _pending: str = ""
    _ids: list[int] | None = None  # tokens not yet decoded, when only the end reads the text
    _handle: Any = None
    _stream: Any = None
    _turn: int = 0
    _key: Any = None  # the search options of a generator that may be used again

    @property
    def queue_s(self) -> float:
        return (self.admitted or self.submitted) - self.submitted


class Runtime(Protocol):
    """What the serving layer needs of a language model."""

    context_length: int
    device: str  # 'cuda' or 'cpu'

    def encode(self, text: str) -> list[int]: ...

    def submit(self, generation: Generation) -> None: ...

    def cancel(self, generation: Generation) -> None: ...

    def load(self) -> tuple[int, int]: ...  # (running, waiting)

    def close(self) -> None: ...


class GenaiRuntime:
    """onnxruntime-genai on a thread of its own; see the module's docstring."""

    def __init__(self, folder: str | Path, *, cuda: bool = False, queue_capacity: int = 64,
                 eos_token_ids: list[int] | None = None, context_length: int | None = None,
                 name: str = "llm", threaded: bool = True, intra_op_threads: int = 0) -> None:
        """``threaded``: run on a thread of its own; else the caller's thread drives it
        with ``busy()`` and ``step()`` (a child process that does nothing else)."""
        import onnxruntime_genai as og

        self._og = og
        try:
            og.disable_telemetry_events()  # nothing leaves the box
        except (AttributeError, RuntimeError):
            pass
        config = og.Config(str(folder))
        if intra_op_threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": intra_op_threads}}}}))
        config.clear_providers()
        if cuda:
            config.append_provider("cuda")
        try:
            self.model = og.Model(config)
            self.tokenizer = og.Tokenizer(self.model)
        except RuntimeError as exc:
            raise OperationFailed(f"onnxruntime-genai could not load {folder}: "
                                  f"{str(exc).splitlines()[0]}") from None
        self.device = "cuda" if cuda else "cpu"
        self.name = name
        self.context_length = int(context_length or 0) or _context_length(folder)
        self.eos = frozenset(eos_token_ids or ())
        # Generators kept between requests of the single path, by their search options;
        # only for a model whose cache for the whole context is small.
        self._idle: dict[Any, Any] = {}
        self._keep_generators = min(IDLE_GENERATORS, IDLE_CACHE_BYTES // max(
            1, _cache_bytes(folder, self.context_length)))
        self.queue_capacity = queue_capacity
        self.engine: Any = None  # made on the runtime's thread, which alone may use it
        self.engine_capacity = 0
        self._waiting: collections.deque[Generation] = collections.deque()
        self._single: list[Generation] = []
        self._batched: dict[int, Generation] = {}  # id(og request) -> generation
        self._cond = threading.Condition()
        self._closing = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._main, name=f"llm-{name}",
                                            daemon=True)
            self._thread.start()
            self._ready.wait()
        else:
            self._make_engine()

    # ---- the interface -------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text)]

    def submit(self, generation: Generation) -> None:
        if len(generation.prompt_ids) + generation.sampling.max_tokens > self.context_length:
            raise BadInput("the prompt and max_tokens exceed the context")
        with self._cond:
            if self._closing:
                raise Unavailable(f"model '{self.name}' is being unloaded; retry")
            # Waiting means beyond the free slots: what the next turn admits is not held
            # against the queue (its requests may all arrive between two turns).
            running = len(self._single) + len(self._batched)
            free = max(0, 1 + self.engine_capacity - running)
            if len(self._waiting) >= self.queue_capacity + free:
                raise Unavailable(f"model '{self.name}' has {self.queue_capacity} requests "
                                  "waiting already (llm.queue_capacity); retry")
            self._waiting.append(generation)
            self._cond.notify()

    def cancel(self, generation: Generation) -> None:
        """Stop a generation at its next step (a client that went away); its slot frees."""
        with self._cond:
            generation.cancelled = True
            self._cond.notify()

    def load(self) -> tuple[int, int]:
        return len(self._single) + len(self._batched), len(self._waiting)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what runs, refuse what waits, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            return
        while self._single or self._batched:
            self.step()
        self._refuse_waiting()

    def busy(self) -> bool:
        return bool(self._waiting or self._single or self._batched)

    def step(self) -> None:
        """Admit what waits and give every running stream one step."""
        try:
            starting: list[tuple[Generation, str]] = []
            if self._waiting:
                with self._cond:
                    starting = self._admit()
            for generation, path in starting:  # prefill, outside the lock
                if path == "single":
                    self._start_single(generation)
                else:
                    self._start_batched(generation)
            self._turn()
        except Exception as exc:  # noqa: BLE001 - a runtime failure ends the requests, not the runtime
            log.exception("%s: generation failed", self.name)
            self._fail_all(f"generation failed: {exc}")

    def _refuse_waiting(self) -> None:
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for generation in waiting:
            self._finish(generation, ERROR, "the model was unloaded before this request ran")

    # ---- the thread ------------------------------------------------------------

    def _make_engine(self) -> None:
        try:
            self.engine = self._og.Engine(self.model)
            self.engine_capacity = max(0, int(self.engine.get_capabilities()
                                              .configured_max_batch_size))
            self._events = self.engine.create_event_buffer(max(64, 4 * self.engine_capacity))
        except RuntimeError as exc:  # a model the engine can not batch: one at a time
            log.info("%s: no batching engine (%s); streams take turns",
                     self.name, str(exc).splitlines()[0])
            self.engine = None
            self.engine_capacity = 0
        finally:
            self._ready.set()

    def _main(self) -> None:
        self._make_engine()
        while True:
            with self._cond:
                while not (self._waiting or self._single or self._batched or self._closing):
                    self._cond.wait()
                if self._closing and not (self._single or self._batched):
                    break
            self.step()
        self._refuse_waiting()

    def _admit(self) -> list[tuple[Generation, str]]:
        """Take waiting requests in, oldest first: onto a generator of their own when
        the model is idle, else into the engine while it has room."""
        starting: list[tuple[Generation, str]] = []
        single = len(self._single)
        batched = len(self._batched)
        while self._waiting:
            head = self._waiting[0]
            if head.cancelled:
                self._waiting.popleft()
                self._finish(head, CANCELLED)
                continue
            # The engine ends a turn one token short of the context: a request that needs
            # all of it waits for a generator of its own.
            whole = len(head.prompt_ids) + head.sampling.max_tokens >= self.context_length
            if single + batched == 0 or (single == 0 and (self.engine is None or whole)):
                path = "single"
                single += 1
            elif whole:
                break
            elif self.engine is not None and batched < self.engine_capacity:
                path = "batched"
                batched += 1
            else:
                break
            self._waiting.popleft()
            starting.append((head, path))
        return starting

    def _prepare(self, generation: Generation, path: str) -> None:
        generation.admitted = time.perf_counter()
        generation.path = path
        # An answer not streamed and without stop strings is read only at its end: its
        # tokens are decoded then, in one call, rather than one call per token.
        if generation.sampling.stop or getattr(generation.sink, "stream", True):
            generation._stream = self.tokenizer.create_stream()
        else:
            generation._ids = []

    def _start_single(self, generation: Generation) -> None:
        og = self._og
        self._prepare(generation, "single")
        s = generation.sampling
        # A generator with the same search options is taken back from an earlier request
        # rather than made anew (not for a seeded request: its random numbers must start
        # from the seed). Its length is rounded up to GENERATOR_LENGTH_STEP tokens, so that
        # prompts of about the same length share one: a step costs more the longer the
        # generator's cache, so it is not made as long as the context.
        reuse = self._keep_generators > 0 and (s.temperature == 0 or s.seed is None)
        length = len(generation.prompt_ids) + s.max_tokens
        if reuse:
            length = -(-length // GENERATOR_LENGTH_STEP) * GENERATOR_LENGTH_STEP
        options: dict[str, Any] = {
            "max_length": min(self.context_length, length),
            "do_sample": s.temperature > 0}
        if s.min_tokens:
            options["min_length"] = len(generation.prompt_ids) + s.min_tokens
        if s.temperature > 0:
            options.update(temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                options["random_seed"] = s.seed
        key = ((options["max_length"], options.get("min_length", 0), s.temperature,
                s.top_p if s.temperature else 1.0) if reuse else None)
        generator = self._idle.pop(key, None) if key is not None else None
        if generator is not None:
            try:
                generator.rewind_to(0)
            except RuntimeError:  # a model that can not go back: make one each time
                self._keep_generators = 0
                self._idle.clear()
                generator = None
        if generator is None:
            params = og.GeneratorParams(self.model)
            params.set_search_options(**options)
            generator = og.Generator(self.model, params)
        generation._key = key
        started = time.perf_counter()
        generator.append_tokens(generation.prompt_ids)
        generation.device_s += time.perf_counter() - started
        generation._handle = generator
        self._single.append(generation)

    def _start_batched(self, generation: Generation) -> None:
        import numpy as np

        og = self._og
        self._prepare(generation, "batched")
        s = generation.sampling
        request = self.engine.create_request()
        options = og.TurnOptions(request)
        # Asked for N tokens, the engine gives N - 1 (it counts the token of the prompt's
        # step apart): ask for one more, and ``_token`` ends the turn at N.
        # It never goes past the context itself.
        room = self.context_length - len(generation.prompt_ids)
        options.set_max_generated_tokens(min(s.max_tokens + 1, room))
        if s.min_tokens:
            options.set_min_generated_tokens(min(s.min_tokens + 1, room))
        options.set_do_sample(s.temperature > 0)
        if s.temperature > 0:
            options.set_temperature(s.temperature)
            options.set_top_p(s.top_p)
            if s.seed is not None:
                options.set_seed(s.seed)
        generation._turn = request.begin_turn(
            np.asarray(generation.prompt_ids, dtype=np.int32), options)
        generation._handle = request
        self._batched[id(request)] = generation

    def _turn(self) -> None:
        """One step for every running stream."""
        for generation in list(self._single):
            if generation.cancelled:
                self._end_single(generation, CANCELLED)
                continue
            generator = generation._handle
            started = time.perf_counter()
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            now = time.perf_counter()
            generation.device_s += now - started
            done = self._token(generation, token, now)
            if done is None and generator.is_done():
                done = STOP if token in self.eos else LENGTH
            if done is None and generation.completion_tokens >= generation.sampling.max_tokens:
                done = LENGTH
            if done is not None:
                self._end_single(generation, done)
        if self._batched:
            self._engine_step()

    def _end_single(self, generation: Generation, reason: str) -> None:
        """End a generation of the single path; its generator is kept when it may serve
        again (the least recently used goes past ``_keep_generators``)."""
        self._single.remove(generation)
        key = generation._key
        if key is not None and generation._handle is not None:
            self._idle.pop(key, None)
            self._idle[key] = generation._handle
            while len(self._idle) > self._keep_generators:
                del self._idle[next(iter(self._idle))]
        self._finish(generation, reason)

    def _engine_step(self) -> None:
        og = self._og
        for running in list(self._batched.values()):
            if running.cancelled and running._handle is not None \
                    and running.finish_reason is None:
                running._handle.cancel_turn(running._turn)
                running.finish_reason = CANCELLED
        started = time.perf_counter()
        events = list(self.engine.run(self._events) or ())
        now = time.perf_counter()
        # The step's time, shared by the tokens each sequence processed in it.
        weights: dict[int, int] = {}
        for event in events:
            stepped = self._batched.get(id(event.request))
            if stepped is not None and event.flags == og.EngineEventFlags.TOKEN:
                key = id(event.request)
                first = stepped.first_token is None and key not in weights
                weights[key] = weights.get(key, 0) + (
                    len(stepped.prompt_ids) + 1 if first else 1)
        total = sum(weights.values())
        for key, weight in weights.items():
            self._batched[key].device_s += (now - started) * weight / total
        for event in events:
            request = event.request
            generation = self._batched.get(id(request))
            if generation is None:
                continue
            if event.flags == og.EngineEventFlags.TOKEN and event.token is not None:
                if generation.finish_reason is not None:
                    continue  # ended by a stop string; the engine has not seen it yet
                done = self._token(generation, int(event.token), now)
                if done is not None:
                    request.cancel_turn(generation._turn)
                    generation.finish_reason = done
            elif (event.finish_reason != og.FinishReason.NONE
                  or event.flags == og.EngineEventFlags.FAILED):
                reason = generation.finish_reason or _engine_reason(og, event)
                error = None
                if event.flags == og.EngineEventFlags.FAILED:
                    reason, error = ERROR, f"the engine failed: {event.error_code.name}"
                del self._batched[id(request)]
                request.close()
                self._finish(generation, reason, error)

    def _token(self, generation: Generation, token: int, now: float) -> str | None:
        """Record one token; a finish reason when it ends the generation."""
        if generation.first_token is None:
            generation.first_token = now
        elif generation.last_token is not None:
            generation.gaps.append(now - generation.last_token)
        generation.last_token = now
        generation.completion_tokens += 1
        if token in self.eos:
            return STOP
        if generation._ids is not None:
            generation._ids.append(token)
        else:
            piece = generation._stream.decode(token)
            if piece:
                generation._pending += piece
                if _emit(generation):
                    return STOP
        if generation.completion_tokens >= generation.sampling.max_tokens:
            return LENGTH
        return None

    def _finish(self, generation: Generation, reason: str, error: str | None = None) -> None:
        if generation.ended is not None:
            return
        if generation._ids:
            text = self.tokenizer.decode(generation._ids)
            generation._ids = []
            if text:
                generation.text += text
                generation.sink.tokens(generation, text)
        if reason in (STOP, LENGTH) and generation._pending:
            generation.text += generation._pending
            generation.sink.tokens(generation, generation._pending)
            generation._pending = ""
        generation.finish_reason = reason
        generation.error = error
        generation.ended = time.perf_counter()
        generation._handle = None
        generation.sink.finished(generation)

    def _fail_all(self, message: str) -> None:
        running = list(self._single) + list(self._batched.values())
        self._idle.clear()
        self._single.clear()
        self._batched.clear()
        for generation in running:
            self._finish(generation, ERROR, message)


def _emit(generation: Generation) -> bool:
    """Send what is safe to send; True when a stop string was found (the text ends
    before it). Text that could begin a stop string is held back until it can not."""
    stops = generation.sampling.stop
    pending = generation._pending
    if not stops:
        generation.text += pending
        generation._pending = ""
        generation.sink.tokens(generation, pending)
        return False
    window = generation.text[-max(len(s) for s in stops):] + pending
    offset = len(window) - len(pending)
    cut = -1
    for stop in stops:
        at = window.find(stop)
        if at != -1 and (cut == -1 or at < cut):
            cut = at
    if cut != -1:
        keep = max(0, cut - offset)
        if cut < offset:  # the stop began in text already sent: nothing more to send
            keep = 0
        piece = pending[:keep]
        generation._pending = ""
        if piece:
            generation.text += piece
            generation.sink.tokens(generation, piece)
        return True
    hold = max(len(s) for s in stops) - 1
    safe = len(pending) - hold
    if safe > 0:
        piece = pending[:safe]
        generation._pending = pending[safe:]
        generation.text += piece
        generation.sink.tokens(generation, piece)
    return False


def _engine_reason(og: Any, event: Any) -> str:
    reason = event.finish_reason
    if reason in (og.FinishReason.EOS, og.FinishReason.STOP_STRING):
        return STOP
    if reason == og.FinishReason.CANCELLED:
        return CANCELLED
    if reason == og.FinishReason.FAILED:
        return ERROR
    return LENGTH


def _context_length(folder: str | Path) -> int:
    config = json.loads((Path(folder) / "genai_config.json").read_text())
    return int(config["model"]["context_length"])


def _cache_bytes(folder: str | Path, tokens: int) -> int:
    """The most a generator's key-value cache for ``tokens`` tokens takes (4-byte values);
    a large number when the configuration does not say."""
    decoder = json.loads((Path(folder) / "genai_config.json").read_text())["model"].get(
        "decoder", {})
    try:
        per_token = (2 * int(decoder["num_hidden_layers"])
                     * int(decoder["num_key_value_heads"]) * int(decoder["head_size"]) * 4)
    except (KeyError, TypeError, ValueError):
        return IDLE_CACHE_BYTES + 1
    return per_token * tokens


class _Waiter:
    """A sink that keeps nothing and says when the generation ended."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def tokens(self, generation: Generation, text: str) -> None:
        pass

    def finished(self, generation: Generation) -> None:
        self.done.set()


def probe(runtime: Runtime, *, text: str = "Hello", max_tokens: int = 8,
          timeout_s: float = 300.0) -> Generation | None:
    """A short greedy generation, to see that a model answers at all: the generation when
    it ended within ``timeout_s`` (its ``finish_reason`` says how), else None."""
    waiter = _Waiter()
    generation = Generation(runtime.encode(text)[:16] or [0],
                            Sampling(max_tokens=max_tokens, temperature=0.0), waiter)
    runtime.submit(generation)
    return generation if waiter.done.wait(timeout_s) else None

