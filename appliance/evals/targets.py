"""What an evaluation run asks: a target turns a case into chat messages and generation
parameters, and names the model version that answers.

``ModelTarget`` (``NAME@VERSION`` or ``NAME@ALIAS`` of a registered language model) sends
each case's ``messages`` as they are.

``PromptTarget`` (``prompts:/NAME@ALIAS`` or ``prompts:/NAME@VERSION``, from
``appliance.prompts``) renders the prompt version's template with each case's
``variables`` into messages, and asks the prompt's model with the prompt's generation
parameters (the run's, then a case's own, win). The version is pinned when the run is
planned: the run names ``prompts:/NAME@VERSION``, whatever alias it was given, so that
promotion finds the runs of the exact version it promotes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from appliance.errors import BadInput
from appliance.evals.cases import Case
from appliance.prompts.registry import PromptVersion
from appliance.prompts.registry import resolve as resolve_prompt
from appliance.registry.refs import parse_ref
from appliance.storage.db import Database

PROMPT_SCHEME = "prompts:/"


@dataclass(frozen=True)
class Request:
    messages: list[dict[str, str]]
    params: dict[str, Any]  # max_tokens, temperature, seed


class Target(Protocol):
    """The small interface an evaluation run needs of what it evaluates."""

    @property
    def text(self) -> str:
        """The target as the user gave it."""
        ...

    def model_ref(self) -> str:
        """The language model version that answers (``NAME@VERSION`` or ``NAME@ALIAS``)."""
        ...

    def check(self, cases: list[Case]) -> None:
        """Refuse, naming the line, a case this target can not ask."""
        ...

    def request(self, case: Case, run_params: dict[str, Any]) -> Request:
        """The case as chat messages and generation parameters (the case's own win)."""
        ...


@dataclass(frozen=True)
class ModelTarget:
    text: str

    def model_ref(self) -> str:
        return self.text

    def check(self, cases: list[Case]) -> None:
        for case in cases:
            if case.messages is None:
                raise BadInput(f"line {case.line} (case {case.id!r}) gives 'variables', not "
                               f"'messages': a model target ({self.text}) needs messages; "
                               "variables are for prompt targets (prompts:/NAME@ALIAS)")

    def request(self, case: Case, run_params: dict[str, Any]) -> Request:
        if case.messages is None:
            raise BadInput(f"case {case.id!r} has no messages")
        return Request(messages=case.messages, params={**run_params, **case.params})


@dataclass(frozen=True)
class PromptTarget:
    text: str  # prompts:/NAME@VERSION, pinned
    prompt: PromptVersion

    def model_ref(self) -> str:
        ref = parse_ref(self.prompt.spec.model, "model")
        if ref.version is None and ref.alias is None:
            return f"{ref.name}@production"
        return self.prompt.spec.model

    def check(self, cases: list[Case]) -> None:
        for case in cases:
            if case.variables is None:
                raise BadInput(f"line {case.line} (case {case.id!r}) gives 'messages', not "
                               f"'variables': a prompt target ({self.text}) renders its "
                               "template with each case's variables")
            try:
                self.prompt.spec.render(case.variables)
            except BadInput as exc:
                raise BadInput(f"line {case.line} (case {case.id!r}): {exc.message}") from None

    def request(self, case: Case, run_params: dict[str, Any]) -> Request:
        messages = self.prompt.spec.render(case.variables or {})
        params = {k: v for k, v in self.prompt.spec.parameter_dict.items()
                  if k in ("max_tokens", "temperature", "seed")}
        return Request(messages=messages, params={**params, **run_params, **case.params})


def check_target(text: str, *, prompts: bool = True) -> None:
    """Check a target's form, with no database (a job's parameters, at submit time);
    ``prompts=False`` for what must be a model (a judge)."""
    if prompts and isinstance(text, str) and text.startswith(PROMPT_SCHEME):
        parse_ref(text[len(PROMPT_SCHEME):], "prompt target")
        return
    if not prompts and isinstance(text, str) and text.startswith("prompts:"):
        raise BadInput(f"{text}: a judge is a language model (NAME@VERSION), not a prompt")
    _model_target(text)


def parse_target(text: str, db: Database) -> Target:
    """A run's target from its text; ``BadInput`` for one that is malformed, ``NotFound``
    for a prompt that does not exist. A prompt target's version is pinned here."""
    if isinstance(text, str) and text.startswith(PROMPT_SCHEME):
        prompt = resolve_prompt(db, text[len(PROMPT_SCHEME):], latest=False)
        return PromptTarget(f"{PROMPT_SCHEME}{prompt.name}@{prompt.version}", prompt)
    return _model_target(text)


def _model_target(text: str) -> ModelTarget:
    if not isinstance(text, str) or not text:
        raise BadInput("the target is empty; give NAME@VERSION or NAME@ALIAS of a language "
                       "model, or prompts:/NAME@ALIAS of a prompt")
    if text.startswith("prompts:") and not text.startswith(PROMPT_SCHEME):
        raise BadInput(f"target {text!r}: a prompt is named prompts:/NAME@ALIAS or "
                       "prompts:/NAME@VERSION")
    ref = parse_ref(text, "target")
    if ref.version is None and ref.alias is None:
        raise BadInput(f"target {text!r}: give NAME@VERSION or NAME@ALIAS (for the "
                       "production version: NAME@production)")
    return ModelTarget(text)
