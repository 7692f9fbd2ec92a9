"""Language models in the serving daemon: loading, the asyncio side of a generation,
and what each request is measured by.

A served LLM version is a ``LoadedLlm``: its runtime (``appliance.llm.runtime``, on
a thread of its own), its chat template and what the registry knows of it. A
request becomes a ``Call``: the runtime's thread hands it tokens, and the event
loop is woken once per batch of them (never once per token while it is still
busy with the last wake), so streaming costs little more than not streaming.

When a call ends, ``LlmService.record`` gives its figures for the answer and, at the
loop's next turn (after the answer is written), counts it in the Prometheus metrics
(named after vLLM's, under ``appliance_llm_``) and queues its request-log row:
tokens, queue time, time to first token, mean inter-token latency, end-to-end
time, finish reason, device-seconds and cost.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import BadInput, OperationFailed
from appliance.llm.chat import ChatTemplate
from appliance.llm.runtime import (
    CANCELLED,
    ERROR,
    GenaiRuntime,
    Generation,
    Runtime,
    Sampling,
    probe,
)
from appliance.serving.requestlog import LlmEntry, RequestLog

# Seconds; time to first token and end-to-end latency span milliseconds to minutes.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                   1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)
TOKEN_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


@dataclass(frozen=True)
class LlmSettings:
    queue_capacity: int = 64
    request_timeout_s: float = 300.0
    default_max_tokens: int = 256
    cost_per_gpu_hour: float = 0.0
    currency: str = ""
    log_text: bool = False
    intra_op_threads: int = 0

    @classmethod
    def from_config(cls, config: Config) -> LlmSettings:
        return cls(
            queue_capacity=config["llm.queue_capacity"],
            request_timeout_s=config["llm.request_timeout_s"],
            default_max_tokens=config["llm.default_max_tokens"],
            cost_per_gpu_hour=config["llm.cost_per_gpu_hour"],
            currency=config["llm.currency"],
            log_text=config["llm.log_text"],
            intra_op_threads=config["llm.intra_op_threads"],
        )


class LoadedLlm:
    """One served language-model version."""

    def __init__(self, name: str, version: int, runtime: Runtime, template: ChatTemplate,
                 info: Mapping[str, Any]) -> None:
        self.name = name
        self.version = version
        self.runtime = runtime
        self.template = template
        self.info = dict(info)
        self.context_length = runtime.context_length
        self.created = int(time.time())
        self.provider = ("CUDAExecutionProvider" if runtime.device == "cuda"
                         else "CPUExecutionProvider")


def load_llm(name: str, version: int, folder: Path, info: Mapping[str, Any], *, cuda: bool,
             settings: LlmSettings, factory: type = GenaiRuntime, loop: Any = None
             ) -> LoadedLlm:
    """Start a runtime on the folder, in a child process (``factory`` runs there: see
    ``appliance.llm.process``), and check it answers one token."""
    from appliance.llm.process import ProcessRuntime

    template = ChatTemplate(folder)
    runtime = ProcessRuntime(folder, runtime=factory, cuda=cuda,
                             queue_capacity=settings.queue_capacity,
                             eos_token_ids=_eos_ids(folder),
                             context_length=int(info.get("context_length") or 0) or None,
                             name=f"{name}@{version}", loop=loop,
                             intra_op_threads=settings.intra_op_threads)
    warm = probe(runtime, max_tokens=1, timeout_s=120)
    if warm is None or warm.finish_reason == ERROR:
        runtime.close()
        raise OperationFailed(f"{name}@{version} did not generate a token when warmed: "
                              f"{warm.error if warm is not None else 'no answer in 120 s'}")
    return LoadedLlm(name, version, runtime, template, info)


def _eos_ids(folder: Path) -> list[int]:
    import json

    model = json.loads((folder / "genai_config.json").read_text()).get("model", {})
    eos = model.get("eos_token_id")
    return [int(e) for e in eos] if isinstance(eos, list) else [int(eos)] if isinstance(
        eos, int) else []


class Guardrails:
    """The guardrails the daemon applies to language-model requests: the policies
    (``guardrails.policies``) and the checks with their classifier (``appliance.guardrails``).
    """

    def __init__(self, policies: Any, guard: Any, hold: int = 128) -> None:
        self.policies = policies
        self.guard = guard
        self.hold = hold  # characters of a streamed answer held back for the output checks

    @classmethod
    def load(cls, config: Config, db: Any, blobs: Any) -> Guardrails | None:
        """From the configuration; None when ``guardrails.enabled`` is off. The classifier
        is read from the registry now (none registered: the pattern checks still run)."""
        from appliance import guardrails

        if not config["guardrails.enabled"]:
            return None
        policies = guardrails.load_policies(config["guardrails.policies"] or None)
        classifier = guardrails.load_classifier(db, blobs, config["guardrails.classifier"])
        return cls(policies, guardrails.Guard(classifier), config["guardrails.stream_hold_chars"])


@dataclass
class Screen:
    """One request's guardrails: its policy, the system prompt as the client gave it and
    the canary placed in it, and the verdicts so far (for the log and the metrics)."""

    policy: Any
    system_prompt: str | None = None
    canary: str | None = None
    verdicts: list[Any] | None = None

    def log(self) -> str | None:
        import json

        out = []
        for v in self.verdicts or ():
            d = {"stage": v.stage, "action": v.action.value if v.action else None,
                 "triggered": v.triggered, "ms": round(v.elapsed_ms, 3)}
            if v.triggered:
                d["results"] = [r.as_dict() for r in v.results if r.triggered]
            if v.notes:
                d["notes"] = v.notes
            out.append(d)
        return json.dumps(out, separators=(",", ":")) if out else None


class Call:
    """One request in flight: the asyncio side of a ``Generation`` (the ``Sink``)."""

    def __init__(self, model: LoadedLlm, prompt_ids: list[int], sampling: Sampling, *,
                 stream: bool, endpoint: str, prompt_text: str,
                 request_id: str | None = None, prompt_ref: str | None = None,
                 arrived: float | None = None) -> None:
        """``arrived``: when the request's body began to be read (``time.perf_counter``),
        so that its time to first token and end-to-end latency count the guardrails, the
        template and the tokenizer too; by default, now."""
        self.model = model
        self.prompt_ref = prompt_ref  # NAME@VERSION of the registered prompt it rendered
        self.screen: Screen | None = None  # the guardrails' state for this request
        self.stream = stream
        self.endpoint = endpoint
        self.prompt_text = prompt_text
        self.request_id = request_id
        self.arrived = time.perf_counter() if arrived is None else arrived
        self.created = int(time.time())
        self.generation = Generation(prompt_ids, sampling, self)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._event = asyncio.Event()
        self._chunks: collections.deque[str] = collections.deque()
        self._scheduled = False
        self.timed_out = False
        self.gone = False  # the client went away
        self.ident: str | None = None  # the answer's id, made when the answer is

    # ---- the sink: the runtime's thread ---------------------------------------

    def tokens(self, generation: Generation, text: str) -> None:
        if self.stream:
            self._chunks.append(text)
            self._kick()

    def finished(self, generation: Generation) -> None:
        self._kick()

    def _kick(self) -> None:
        if threading.get_ident() == self._loop_thread:  # the loop reads the runtime's pipe
            self._event.set()
            return
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed: nobody waits any more
                pass

    def _wake(self) -> None:
        self._scheduled = False
        self._event.set()

    # ---- the event loop -------------------------------------------------------

    def start(self) -> None:
        self.model.runtime.submit(self.generation)

    def cancel(self, *, gone: bool = False) -> None:
        self.gone = self.gone or gone
        if self.generation.ended is None:
            self.model.runtime.cancel(self.generation)

    @property
    def done(self) -> bool:
        return self.generation.ended is not None

    async def _wait(self, deadline: float) -> bool:
        """Wait for the next wake; False when the deadline passed (the call is cancelled)."""
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            self._expire()
            return False
        if not self._event.is_set():
            try:
                # A timeout of the task's own, not wait_for's task per wait: one turn of
                # the loop fewer when the generation ends.
                async with asyncio.timeout(remaining):
                    await self._event.wait()
            except TimeoutError:
                self._expire()
                return False
        self._event.clear()
        return True

    def _expire(self) -> None:
        self.timed_out = True
        self.cancel()

    async def result(self, timeout_s: float) -> Generation:
        """The finished generation; on timeout it is stopped and waited for (briefly)."""
        deadline = self.arrived + timeout_s
        while not self.done:
            if not await self._wait(deadline):
                break
        grace = time.perf_counter() + 5.0
        while not self.done and time.perf_counter() < grace:
            await self._wait(grace)
        return self.generation

    async def pieces(self, timeout_s: float) -> AsyncIterator[str]:
        """Text as it is generated, in the pieces the runtime sent between wakes."""
        deadline = self.arrived + timeout_s
        while True:
            if self._chunks:
                yield "".join(self._drain())
                continue
            if self.done:
                if self._chunks:
                    continue
                return
            if not await self._wait(deadline):
                grace = time.perf_counter() + 5.0
                while not self.done and time.perf_counter() < grace:
                    await self._wait(grace)
                return

    def _drain(self) -> list[str]:
        out = []
        while self._chunks:
            out.append(self._chunks.popleft())
        return out


class _Hist:
    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def observe_many(self, values: list[float]) -> None:
        counts, bounds, where = self.counts, self.bounds, bisect.bisect_left
        for value in values:
            counts[where(bounds, value)] += 1
        self.total += sum(values)
        self.count += len(values)


class LlmMetrics:
    """vLLM's request metrics, per model and version, under ``appliance_llm_``."""

    HISTOGRAMS = {
        "time_to_first_token_seconds": ("Time to first token.", LATENCY_BUCKETS),
        "inter_token_latency_seconds": ("Time between two tokens of one answer.",
                                        TOKEN_BUCKETS),
        "e2e_request_latency_seconds": ("End-to-end request latency.", LATENCY_BUCKETS),
        "request_queue_time_seconds": ("Time a request waited for a slot.", LATENCY_BUCKETS),
    }

    def __init__(self) -> None:
        self.hist: dict[tuple[str, str, str], _Hist] = {}
        self.prompt_tokens: dict[tuple[str, str], int] = collections.defaultdict(int)
        self.generation_tokens: dict[tuple[str, str], int] = collections.defaultdict(int)
        self.requests: dict[tuple[str, str, str], int] = collections.defaultdict(int)
        self.device_s: dict[tuple[str, str], float] = collections.defaultdict(float)
        self.cost: dict[tuple[str, str], float] = collections.defaultdict(float)
        # (model, version, stage, check, action) -> verdicts with that check triggered
        self.guardrail: dict[tuple[str, str, str, str, str], int] = collections.defaultdict(int)

    def observe(self, name: str, key: tuple[str, str], value: float) -> None:
        self._hist(name, key).observe(value)

    def observe_many(self, name: str, key: tuple[str, str], values: list[float]) -> None:
        self._hist(name, key).observe_many(values)

    def _hist(self, name: str, key: tuple[str, str]) -> _Hist:
        hist = self.hist.get((name, *key))
        if hist is None:
            hist = self.hist[(name, *key)] = _Hist(self.HISTOGRAMS[name][1])
        return hist

    def render(self, running: Mapping[tuple[str, str], tuple[int, int]]) -> str:
        from appliance.serving.metrics import _labels

        out: list[str] = []
        p = "appliance_llm_"
        for name, (help_text, _bounds) in self.HISTOGRAMS.items():
            out += [f"# HELP {p}{name} {help_text}", f"# TYPE {p}{name} histogram"]
            for (hname, model, version), hist in sorted(self.hist.items()):
                if hname != name:
                    continue
                running_count = 0
                for bound, n in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
                    running_count += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    out.append(f"{p}{name}_bucket"
                               f"{_labels((('model', model), ('version', version), ('le', le)))}"
                               f" {running_count}")
                lab = _labels((("model", model), ("version", version)))
                out.append(f"{p}{name}_sum{lab} {hist.total:.6f}")
                out.append(f"{p}{name}_count{lab} {hist.count}")

        def family(name: str, kind: str, help_text: str, rows: list[tuple[str, Any]]) -> None:
            out.extend([f"# HELP {p}{name} {help_text}", f"# TYPE {p}{name} {kind}"])
            out.extend(f"{p}{name}{labels} {value}" for labels, value in rows)

        def per_key(values: Mapping[tuple[str, str], Any]) -> list[tuple[str, Any]]:
            return [(_labels((("model", m), ("version", v))), n)
                    for (m, v), n in sorted(values.items())]

        family("prompt_tokens_total", "counter", "Prompt tokens processed.",
               per_key(self.prompt_tokens))
        family("generation_tokens_total", "counter", "Tokens generated.",
               per_key(self.generation_tokens))
        family("request_success_total", "counter",
               "Requests ended, per finish reason (stop, length, cancelled, error, timeout).",
               [(_labels((("model", m), ("version", v), ("finished_reason", r))), n)
                for (m, v, r), n in sorted(self.requests.items())])
        family("device_seconds_total", "counter",
               "Device time of requests: GPU-seconds on a GPU, CPU-seconds elsewhere.",
               [(lab, f"{n:.6f}") for lab, n in per_key(self.device_s)])
        family("cost_total", "counter",
               "Cost of requests: device-seconds priced by llm.cost_per_gpu_hour.",
               [(lab, f"{n:.6f}") for lab, n in per_key(self.cost)])
        family("guardrail_verdicts_total", "counter",
               "Guardrail checks that triggered, per stage (input, output), check and the "
               "action taken (block, redact, flag).",
               [(_labels((("model", m), ("version", v), ("stage", st), ("check", c),
                          ("action", a))), n)
                for (m, v, st, c, a), n in sorted(self.guardrail.items())])
        family("num_requests_running", "gauge", "Requests generating now.",
               [(lab, r) for lab, (r, _w) in per_key(running)])
        family("num_requests_waiting", "gauge", "Requests waiting for a slot.",
               [(lab, w) for lab, (_r, w) in per_key(running)])
        return "\n".join(out) + "\n"


class LlmService:
    """What the serving daemon keeps for language models: settings, metrics, the log."""

    def __init__(self, settings: LlmSettings, request_log: RequestLog | None) -> None:
        self.settings = settings
        self.metrics = LlmMetrics()
        self.request_log = request_log
        # What runs a model folder: onnxruntime-genai; another backend with the same
        # interface (``appliance.llm.runtime.Runtime``) may stand in.
        self.runtime_factory: type = GenaiRuntime
        self.guardrails: Guardrails | None = None  # set when the daemon starts

    def verdict(self, model: LoadedLlm, screen: Screen, verdict: Any) -> None:
        """Keep a guardrail verdict for the request's log row and count what triggered."""
        screen.verdicts = [*(screen.verdicts or ()), verdict]
        for r in verdict.results:
            if r.triggered:
                self.metrics.guardrail[(model.name, str(model.version), verdict.stage,
                                        r.check, r.action.value if r.action else "none")] += 1

    def refused(self, model: LoadedLlm, *, endpoint: str, stream: bool, prompt_text: str,
                request_id: str | None, prompt_ref: str | None, screen: Screen,
                prompt_tokens: int) -> None:
        """Log a request the guardrails refused before it reached the model."""
        self.metrics.requests[(model.name, str(model.version), "guardrail")] += 1
        if self.request_log is not None:
            self.request_log.record(LlmEntry(
                time.time(), model.name, model.version, endpoint, request_id, 400, stream,
                prompt_tokens, 0, 0.0, None, None, 0.0, "guardrail", model.runtime.device,
                0.0, 0.0, self.settings.currency, "refused by the guardrails",
                prompt_text if self.settings.log_text else None, None, prompt_ref,
                screen.log()))

    def cost(self, device_s: float) -> float:
        return device_s * self.settings.cost_per_gpu_hour / 3600.0

    def sampling(self, model: LoadedLlm, prompt_tokens: int, *, max_tokens: int | None,
                 temperature: float, top_p: float, seed: int | None,
                 stop: tuple[str, ...], param: str = "max_tokens",
                 min_tokens: int = 0) -> Sampling:
        """Check the prompt and answer fit the model's context; the sampling settings."""
        context = model.context_length
        if prompt_tokens >= context:
            raise BadInput(f"the prompt is {prompt_tokens} tokens; the model's context is "
                           f"{context} tokens, and the answer needs at least one",
                           param="messages" if param == "max_tokens" else "prompt")
        room = context - prompt_tokens
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, room)
        elif max_tokens > room:
            raise BadInput(f"{param} {max_tokens} is past the context: the prompt is "
                           f"{prompt_tokens} tokens of the model's {context}, so at most "
                           f"{room} can be generated", param=param)
        if min_tokens > max_tokens:
            raise BadInput(f"min_tokens {min_tokens} is more than the {max_tokens} tokens the "
                           "answer may have", param="min_tokens")
        return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                        seed=seed, stop=stop, min_tokens=min_tokens)

    def record(self, call: Call, status: int, error: str | None = None,
               reason: str | None = None) -> dict[str, Any]:
        """Count a finished call; its ``appliance`` figures (for the answer) are returned.
        ``reason`` stands for the generation's finish reason (an answer withheld)."""
        g = call.generation
        model = call.model
        now = time.perf_counter()
        end = g.ended or now
        queue_s = ((g.admitted or end) - g.submitted)
        ttft = (g.first_token - call.arrived) if g.first_token is not None else None
        e2e = end - call.arrived
        itl = (sum(g.gaps) / len(g.gaps)) if g.gaps else None
        given = reason
        reason = g.finish_reason
        if given is not None:
            reason = given
        elif call.timed_out:
            reason = "timeout"
        elif call.gone and reason == CANCELLED:
            reason = "client_gone"
        cost = self.cost(g.device_s)
        figures = {
            "model_version": model.version,
            "queue_ms": round(queue_s * 1e3, 3),
            "time_to_first_token_ms": None if ttft is None else round(ttft * 1e3, 3),
            "inter_token_ms": None if itl is None else round(itl * 1e3, 4),
            "generation_ms": round(((g.ended or now) - (g.admitted or now)) * 1e3, 3),
            "e2e_ms": round(e2e * 1e3, 3),
            "device": model.runtime.device,
            "gpu_seconds" if model.runtime.device == "cuda" else "cpu_seconds":
                round(g.device_s, 6),
            "cost": round(cost, 9),
            "currency": self.settings.currency,
        }
        if call.prompt_ref is not None:
            figures["prompt"] = call.prompt_ref
        # The metrics and the request-log row wait for the loop's next turn: the answer
        # is written first. Nothing the loop reads later is handled before them.
        call._loop.call_soon(self._account, call, status, error, reason, time.time(),
                             (queue_s, ttft, itl, e2e, cost))
        return figures

    def _account(self, call: Call, status: int, error: str | None, reason: str | None,
                 ts: float, times: tuple[float, float | None, float | None, float, float]
                 ) -> None:
        """A finished call in the metrics and the request log (see ``record``)."""
        queue_s, ttft, itl, e2e, cost = times
        g = call.generation
        model = call.model
        key = (model.name, str(model.version))
        m = self.metrics
        if status < 400 or g.completion_tokens:
            m.prompt_tokens[key] += len(g.prompt_ids)
            m.generation_tokens[key] += g.completion_tokens
            m.device_s[key] += g.device_s
            m.cost[key] += cost
            m.observe("request_queue_time_seconds", key, queue_s)
            m.observe("e2e_request_latency_seconds", key, e2e)
            if ttft is not None:
                m.observe("time_to_first_token_seconds", key, ttft)
            if g.gaps:
                m.observe_many("inter_token_latency_seconds", key, g.gaps)
        m.requests[(*key, reason or "error")] += 1
        if self.request_log is not None:
            text = self.settings.log_text
            self.request_log.record(LlmEntry(
                ts, model.name, model.version, call.endpoint, call.request_id, status,
                call.stream, len(g.prompt_ids), g.completion_tokens, queue_s * 1e3,
                None if ttft is None else ttft * 1e3, None if itl is None else itl * 1e3,
                e2e * 1e3, reason, model.runtime.device, g.device_s, cost,
                self.settings.currency, error or g.error,
                call.prompt_text if text else None, g.text if text else None,
                call.prompt_ref, call.screen.log() if call.screen is not None else None))
