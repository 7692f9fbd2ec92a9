"""OpenAI's API for the language models the daemon serves: ``/v1/models``,
``/v1/chat/completions`` and ``/v1/completions``, streaming or not.

Requests and answers keep OpenAI's shapes, so its client works unchanged. Every
answer carries ``usage`` (tokens counted with the model's own tokenizer) and an
``appliance`` object: the model version, queue time, time to first token,
generation time, device-seconds and their cost. Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}``.

A streamed answer is server-sent events of ``chat.completion.chunk`` (or
``text_completion``) objects, then, with ``stream_options.include_usage``, a chunk
with the usage and empty ``choices``, then ``data: [DONE]``. A client that goes
away, streaming or not, stops its generation at once and frees its slot.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from appliance.errors import ApplianceError, BadInput, NotFound, OperationFailed, Unavailable
from appliance.guardrails import GuardrailBlocked
from appliance.guardrails.policy import OUTPUT_CHECKS
from appliance.guardrails.stream import StreamScreen
from appliance.llm.chat import check_messages
from appliance.llm.runtime import CANCELLED, ERROR
from appliance.prompts import serving as prompt_serving
from appliance.serving.engine import Engine
from appliance.serving.llm import Call, LoadedLlm, Screen

JSON = b"application/json"
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, Headers, Any]  # the body: bytes, or an async iterator of bytes

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error",
          413: "invalid_request_error", 503: "server_error", 504: "timeout_error"}
_CODES = {401: "invalid_api_key", 403: "forbidden", 413: "request_too_large",
          503: "overloaded", 504: "timeout"}


class Timeout(ApplianceError):
    status = 504


def error_doc(status: int, message: str, param: str | None = None,
              code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code or _CODES.get(status)}}


def error_response(exc: ApplianceError) -> Response:
    code = getattr(exc, "code", None)
    if isinstance(exc, NotFound) and exc.param == "model":
        code = "model_not_found"
    elif exc.status == 400 and "context" in exc.message:
        code = "context_length_exceeded"
    extra: Headers = []
    if exc.status == 503:
        extra.append((b"retry-after", b"1"))
    elif exc.status == 401:
        extra.append((b"www-authenticate", b'Bearer realm="appliance"'))
    return (exc.status, [(b"content-type", JSON), *extra],
            orjson.dumps(error_doc(exc.status, exc.message, exc.param, code)))


def _ok(doc: Any) -> Response:
    return 200, [(b"content-type", JSON)], orjson.dumps(doc)


# ---- reading a request ---------------------------------------------------------------


def _body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadInput("the request body is empty; send a JSON object")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput("the request body must be a JSON object")
    return doc


def _number(doc: Mapping[str, Any], key: str, default: float, low: float, high: float,
            *, open_low: bool = False) -> float:
    value = doc.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"'{key}' must be a number", param=key)
    if value < low or value > high or (open_low and value <= low):
        side = ">" if open_low else ">="
        raise BadInput(f"'{key}' must be {side} {low:g} and <= {high:g}, not {value}",
                       param=key)
    return float(value)


def _integer(doc: Mapping[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"'{key}' must be an integer", param=key)
    return value


class Params:
    """The fields of a completion request that both endpoints share, checked."""

    def __init__(self, doc: Mapping[str, Any], endpoint: str) -> None:
        model = doc.get("model")
        if not isinstance(model, str) or not model:
            raise BadInput("'model' must name a served model (see GET /v1/models)",
                           param="model")
        self.model = model
        self.endpoint = endpoint
        max_tokens = _integer(doc, "max_completion_tokens")
        self.max_param = "max_completion_tokens"
        if max_tokens is None:
            max_tokens = _integer(doc, "max_tokens")
            self.max_param = "max_tokens"
        if max_tokens is not None and max_tokens < 1:
            raise BadInput(f"'{self.max_param}' must be at least 1, not {max_tokens}",
                           param=self.max_param)
        self.max_tokens = max_tokens
        # vLLM's extension: no end of answer before this many tokens.
        min_tokens = _integer(doc, "min_tokens") or 0
        if min_tokens < 0:
            raise BadInput("'min_tokens' must be 0 or more", param="min_tokens")
        self.min_tokens = min_tokens
        self.temperature = _number(doc, "temperature", 1.0, 0.0, 2.0)
        self.top_p = _number(doc, "top_p", 1.0, 0.0, 1.0, open_low=True)
        seed = _integer(doc, "seed")
        self.seed = None if seed is None else seed & 0x7FFFFFFF
        n = doc.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise BadInput("'n' must be 1: one answer per request", param="n")
        stop = doc.get("stop")
        if stop is None:
            self.stop: tuple[str, ...] = ()
        elif isinstance(stop, str):
            self.stop = (stop,) if stop else ()
        elif isinstance(stop, list) and len(stop) <= 4 and all(
                isinstance(s, str) and s for s in stop):
            self.stop = tuple(stop)
        else:
            raise BadInput("'stop' must be a string or a list of up to 4 non-empty strings",
                           param="stop")
        stream = doc.get("stream", False)
        if not isinstance(stream, bool):
            raise BadInput("'stream' must be true or false", param="stream")
        self.stream = stream
        options = doc.get("stream_options")
        self.include_usage = False
        if options is not None:
            if not stream:
                raise BadInput("'stream_options' is only allowed with stream: true",
                               param="stream_options")
            if not isinstance(options, dict):
                raise BadInput("'stream_options' must be an object", param="stream_options")
            include = options.get("include_usage", False)
            if not isinstance(include, bool):
                raise BadInput("'stream_options.include_usage' must be true or false",
                               param="stream_options.include_usage")
            self.include_usage = include
        for key in ("tools", "functions", "tool_choice"):
            if doc.get(key):
                raise BadInput(f"'{key}' is not offered: the models served here answer in "
                               "text", param=key)
        if doc.get("logprobs"):
            raise BadInput("'logprobs' is not offered", param="logprobs")
        request_id = doc.get("user")
        self.user = request_id if isinstance(request_id, str) else None


def _prompt(doc: Mapping[str, Any]) -> str:
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadInput("'prompt' must be a string (one prompt per request)", param="prompt")
    if not prompt:
        raise BadInput("'prompt' is empty", param="prompt")
    return prompt


# ---- the endpoints ---------------------------------------------------------------------


class OpenAI:
    """The ``/v1`` endpoints over the serving engine."""

    def __init__(self, engine: Engine,
                 prompts: prompt_serving.PromptSource | None = None) -> None:
        self.engine = engine
        self.prompts = prompts  # registered prompts, named as "prompts:/NAME@ALIAS"

    def models(self, name: str | None = None) -> Response:
        rows = []
        for served, route in sorted(self.engine.routes.items()):
            model = self.engine.models.get((served, route.primary))
            if model is None or model.llm is None:
                continue
            rows.append({"id": served, "object": "model",
                         "created": model.llm.created, "owned_by": "appliance",
                         "appliance": {"version": model.version,
                                       "context_length": model.llm.context_length,
                                       "device": model.llm.runtime.device}})
        if name is None:
            return _ok({"object": "list", "data": rows})
        for row in rows:
            if row["id"] == name:
                return _ok(row)
        raise NotFound(f"the model '{name}' does not exist or is not served", param="model")

    async def complete(self, endpoint: str, body: bytes,
                       gone: asyncio.Event | None) -> Response:
        arrived = time.perf_counter()
        doc = _body(body)
        served = None
        if prompt_serving.is_prompt_ref(doc.get("model")):
            served = await self._named_prompt(endpoint, doc["model"])
            doc = prompt_serving.apply(served, doc)
        elif doc.get("variables") is not None:
            raise BadInput("'variables' go with a prompt: \"model\": \"prompts:/NAME@ALIAS\"",
                           param="variables")
        params = Params(doc, endpoint)
        model = await self._model(params.model, served)
        service = self.engine.llm
        screen: Screen | None = None
        if endpoint == "chat":
            messages = check_messages(doc.get("messages"))
            if service.guardrails is not None:
                screen = Screen(service.guardrails.policies.for_request(
                    model=params.model, prompt=served.prompt.name if served else None))
                self._screen_input(model, screen, "\n".join(
                    m["content"] for m in messages if m["role"] == "user"), params, served)
                messages = self._protect(screen, messages)
            prompt = model.template.render(messages)
        else:
            prompt = _prompt(doc)
            if service.guardrails is not None:
                screen = Screen(service.guardrails.policies.for_request(model=params.model))
                self._screen_input(model, screen, prompt, params, served)
        ids = model.runtime.encode(prompt)
        sampling = service.sampling(model, len(ids), max_tokens=params.max_tokens,
                                    temperature=params.temperature, top_p=params.top_p,
                                    seed=params.seed, stop=params.stop,
                                    param=params.max_param, min_tokens=params.min_tokens)
        call = Call(model, ids, sampling, stream=params.stream, endpoint=endpoint,
                    prompt_text=prompt, request_id=params.user,
                    prompt_ref=served.prompt.ref if served is not None else None,
                    arrived=arrived)
        call.screen = screen
        call.start()
        watcher = _watch(gone, call)
        if params.stream:
            headers: Headers = [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache"),
                                (b"x-accel-buffering", b"no")]
            return 200, headers, self._stream(call, params, watcher)
        try:
            generation = await call.result(service.settings.request_timeout_s)
        finally:
            if watcher is not None:
                watcher.cancel()
        return self._answer(call, params, generation)

    # ---- guardrails ----------------------------------------------------------------

    def _screen_input(self, model: LoadedLlm, screen: Screen, text: str, params: Params,
                      served: prompt_serving.ServedPrompt | None) -> None:
        """The input checks; a blocked request is logged and answered 400 (guardrail)."""
        service = self.engine.llm
        assert service.guardrails is not None
        verdict = service.guardrails.guard.check_input(text, screen.policy)
        service.verdict(model, screen, verdict)
        if verdict.blocked:
            service.refused(model, endpoint=params.endpoint, stream=params.stream,
                            prompt_text=text, request_id=params.user,
                            prompt_ref=served.prompt.ref if served else None, screen=screen,
                            prompt_tokens=0)
            raise GuardrailBlocked(verdict)

    def _protect(self, screen: Screen, messages: list[dict[str, str]]
                 ) -> list[dict[str, str]]:
        """The first system message with the policy's canary in it (none: unchanged)."""
        service = self.engine.llm
        assert service.guardrails is not None
        for i, m in enumerate(messages):
            if m["role"] == "system":
                text, canary = service.guardrails.guard.protect_system_prompt(
                    m["content"], screen.policy)
                screen.system_prompt, screen.canary = m["content"], canary
                return [*messages[:i], {**m, "content": text}, *messages[i + 1:]]
        return messages

    def _screen_output(self, call: Call, text: str) -> Any:
        """The output checks on an answer; the verdict (its ``text`` masked if redacted)."""
        service = self.engine.llm
        screen = call.screen
        assert service.guardrails is not None and screen is not None
        verdict = service.guardrails.guard.check_output(
            text, screen.policy, system_prompt=screen.system_prompt, canary=screen.canary)
        service.verdict(call.model, screen, verdict)
        return verdict

    def _stream_screen(self, call: Call) -> StreamScreen | None:
        """The output checks of a streamed answer, as it goes (none without guardrails or
        without an output check in the policy: nothing is then held back)."""
        service = self.engine.llm
        screen = call.screen
        if screen is None or service.guardrails is None \
                or not any(screen.policy.enabled(c) for c in OUTPUT_CHECKS):
            return None
        return StreamScreen(service.guardrails.guard, screen.policy,
                            system_prompt=screen.system_prompt, canary=screen.canary,
                            hold=service.guardrails.hold)

    async def _withheld(self, call: Call, params: Params, base: dict[str, Any],
                        checks: StreamScreen) -> AsyncIterator[bytes]:
        """A stream a check blocked: the generation stopped, the verdict logged, and a last
        event with the guardrail's error and finish reason ``guardrail``, then [DONE]."""
        service = self.engine.llm
        assert checks.blocked is not None and call.screen is not None
        call.cancel()
        if call.generation.ended is None:
            await call.result(5.0)
        service.verdict(call.model, call.screen, checks.blocked)
        blocked = GuardrailBlocked(checks.blocked, answer=True)
        service.record(call, 400, blocked.message, reason="guardrail")
        last = ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": "guardrail"}
                if params.endpoint == "chat" else
                {"index": 0, "text": "", "logprobs": None, "finish_reason": "guardrail"})
        yield _event({**base, "choices": [last],
                      **error_doc(400, blocked.message, code=blocked.code)})
        yield b"data: [DONE]\n\n"

    async def _named_prompt(self, endpoint: str, ref: str) -> prompt_serving.ServedPrompt:
        if self.prompts is None:
            raise NotFound("this server reads no prompt registry", param="model")
        if endpoint != "chat":
            raise BadInput("a prompt answers at /v1/chat/completions", param="model")
        return await asyncio.to_thread(self.prompts.get, ref)

    async def _model(self, name: str, served: prompt_serving.ServedPrompt | None) -> LoadedLlm:
        """The model that answers: by name its production version; for a prompt, the
        version its ``model`` names (a version other than production only if signed)."""
        if served is None:
            return self.engine.served_llm(name)
        about = f"prompt {served.prompt.ref} is for the model '{served.prompt.spec.model}'"
        try:
            if served.model_version is None:
                return self.engine.served_llm(name)
            loaded = await self.engine.version(name, served.model_version)
        except NotFound as exc:
            raise NotFound(f"{about}, which is not served: {exc.message}",
                           param="model") from None
        if loaded.llm is None:
            raise BadInput(f"{about}, a tabular model", param="model")
        return loaded.llm

    def _answer(self, call: Call, params: Params, generation: Any) -> Response:
        service = self.engine.llm
        if call.timed_out:
            service.record(call, 504, "timed out")
            raise Timeout(f"the answer took longer than llm.request_timeout_s "
                          f"({service.settings.request_timeout_s:g} s); it was stopped")
        if generation.finish_reason == CANCELLED:
            service.record(call, 499, "the client went away")
            raise OperationFailed("the request was cancelled")
        if generation.finish_reason == ERROR:
            status = 503 if generation.retryable else 500
            service.record(call, status, generation.error)
            if generation.retryable:
                raise Unavailable(f"model '{call.model.name}' could not answer: "
                                  f"{generation.error}; retry")
            raise OperationFailed(f"model '{call.model.name}' failed: {generation.error}")
        text = generation.text
        if call.screen is not None:
            verdict = self._screen_output(call, text)
            if verdict.blocked:
                service.record(call, 400, "the answer was withheld by the guardrails",
                               reason="guardrail")
                raise GuardrailBlocked(verdict, answer=True)
            text = verdict.text
        figures = service.record(call, 200)
        base = _base(call, params)
        if params.endpoint == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": generation.finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": generation.finish_reason}
        return _ok({**base, "choices": [choice], "usage": _usage(call),
                    "appliance": figures})

    async def _stream(self, call: Call, params: Params,
                      watcher: asyncio.Task[None] | None) -> AsyncIterator[bytes]:
        service = self.engine.llm
        base = _base(call, params, chunk=True)
        chat = params.endpoint == "chat"
        finished = False
        try:
            if chat:
                yield _event({**base, "choices": [{"index": 0, "delta": {
                    "role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}]})
            checks = self._stream_screen(call)
            async for text in call.pieces(service.settings.request_timeout_s):
                if checks is not None:
                    text = checks.feed(text)
                    if checks.blocked is not None:
                        finished = True
                        async for event in self._withheld(call, params, base, checks):
                            yield event
                        return
                    if not text:
                        # An SSE comment, which clients skip: the connection is written to
                        # for every piece, so a client that left is noticed at once.
                        yield b":\n\n"
                        continue
                yield _event({**base, "choices": [_piece(chat, text)]})
            g = call.generation
            finished = True
            if call.timed_out or g.finish_reason in (CANCELLED, ERROR, None):
                status = 504 if call.timed_out else 503 if g.retryable else 500
                message = (f"the answer took longer than llm.request_timeout_s "
                           f"({service.settings.request_timeout_s:g} s); it was stopped"
                           if call.timed_out else f"generation failed: {g.error or 'cancelled'}")
                service.record(call, status, message)
                yield _event(error_doc(status, message))
                yield b"data: [DONE]\n\n"
                return
            if checks is not None:
                rest = checks.finish()
                if checks.blocked is not None:
                    async for event in self._withheld(call, params, base, checks):
                        yield event
                    return
                assert call.screen is not None
                service.verdict(call.model, call.screen, checks.verdict())
                if rest:
                    yield _event({**base, "choices": [_piece(chat, rest)]})
            figures = service.record(call, 200)
            last = ({"index": 0, "delta": {}, "logprobs": None,
                     "finish_reason": g.finish_reason} if chat else
                    {"index": 0, "text": "", "logprobs": None,
                     "finish_reason": g.finish_reason})
            if params.include_usage:
                yield _event({**base, "choices": [last]})
                yield _event({**base, "choices": [], "usage": _usage(call),
                              "appliance": figures})
            else:
                yield _event({**base, "choices": [last], "appliance": figures})
            yield b"data: [DONE]\n\n"
        finally:
            if watcher is not None:
                watcher.cancel()
            if not finished:  # the client went away mid-stream, or the server is stopping
                call.cancel(gone=True)
                if call.generation.ended is None:
                    await call.result(5.0)
                service.record(call, 499, "the client went away")


def _piece(chat: bool, text: str) -> dict[str, Any]:
    """One streamed choice carrying ``text``."""
    if chat:
        return {"index": 0, "delta": {"content": text}, "logprobs": None,
                "finish_reason": None}
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": None}


def _watch(gone: asyncio.Event | None, call: Call) -> asyncio.Task[None] | None:
    """Cancel the call's generation as soon as its client's connection closes."""
    if gone is None:
        return None

    async def watch() -> None:
        await gone.wait()
        call.cancel(gone=True)

    return asyncio.get_running_loop().create_task(watch())


def _base(call: Call, params: Params, *, chunk: bool = False) -> dict[str, Any]:
    if params.endpoint == "chat":
        kind = "chat.completion.chunk" if chunk else "chat.completion"
        prefix = "chatcmpl-"
    else:
        kind = "text_completion"
        prefix = "cmpl-"
    if call.ident is None:
        call.ident = prefix + secrets.token_hex(12)
    return {"id": call.ident, "object": kind, "created": call.created,
            "model": call.model.name,
            "system_fingerprint": f"{call.model.name}@{call.model.version}"}


def _usage(call: Call) -> dict[str, int]:
    g = call.generation
    prompt = len(g.prompt_ids)
    return {"prompt_tokens": prompt, "completion_tokens": g.completion_tokens,
            "total_tokens": prompt + g.completion_tokens}


def _event(doc: Any) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"
