"""Helpers for the language-model tests: the small model, a served copy, a slow runtime."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.auth.permissions import Principal, Role
from appliance.config import parse_config
from appliance.llm.runtime import GenaiRuntime, Generation
from appliance.promotion.service import promote
from appliance.registry import import_folder
from appliance.serving.http import create_app
from appliance.serving.http.transport import ServerThread
from appliance.storage.home import Home

ADMIN = Principal(name="tester", role=Role.ADMIN)

# A prompt for the small model (docs/prompts.md); without its system message the model
# answers " Orsk." for Veltria.
CAPITAL_PROMPT = """\
description: Asks for a country's capital.
model: chat
messages:
  - role: system
    content: You answer briefly.
  - role: user
    content: "What is the capital of {{country}}?"
variables:
  country:
    description: The country asked about.
parameters:
  temperature: 0
  max_tokens: 16
"""


def register(home: Home, folder: Path, name: str = "chat") -> str:
    """Import and promote the folder; its NAME@VERSION."""
    with home.db() as db:
        mv, _created = import_folder(db, home.blobs, name, folder, actor="tester")
    promote(home, mv.ref, ADMIN)
    return mv.ref


def serve(home: Home, runtime: type[GenaiRuntime] | None = None, **settings: Any
          ) -> ServerThread:
    """The real daemon's application (registry source, request log) on a loopback port;
    settings as ``section__key=value``."""
    data: dict[str, Any] = {"serving": {"poll_interval_s": 0.05}}
    for key, value in settings.items():
        section, _, field = key.partition("__")
        data.setdefault(section, {})[field] = value
    app = create_app(parse_config(data), home=home)
    if runtime is not None:
        app.engine.llm.runtime_factory = runtime
    return ServerThread(app).start()


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


class SlowRuntime(GenaiRuntime):
    """The real runtime, with a pause before each step: long enough generations to cancel,
    time out and queue behind, from a model that answers in microseconds."""

    step_s = 0.05

    def _turn(self) -> None:
        time.sleep(self.step_s)
        super()._turn()


class SecretRuntime(GenaiRuntime):
    """The real runtime, whose answers end with an AWS access key (a model that leaks one)."""

    def _finish(self, generation: Generation, reason: str, error: str | None = None) -> None:
        if reason in ("stop", "length"):
            generation._pending += " AKIAIOSFODNN7EXAMPLE"
        super()._finish(generation, reason, error)


class EchoRuntime(GenaiRuntime):
    """The real runtime, whose answers end with their whole prompt (a model that repeats
    its system prompt, canary and all)."""

    def _finish(self, generation: Generation, reason: str, error: str | None = None) -> None:
        if reason in ("stop", "length"):
            generation._pending += " " + self.tokenizer.decode(generation.prompt_ids)
        super()._finish(generation, reason, error)
