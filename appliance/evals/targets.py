"""What an evaluation run asks: a target turns a case into chat messages and generation
parameters, and names the model version that answers.

``ModelTarget`` (``NAME@VERSION`` or ``NAME@ALIAS`` of a registered language model) sends
each case's ``messages`` as they are.

Not done yet: ``PromptTarget`` (``prompts:/NAME@ALIAS``) comes with the prompt registry
(``appliance.prompts``). It will render the prompt version's template with each case's
``variables`` into messages, take the prompt's model and its generation parameters
(a case's ``params`` still win), and name the prompt version in the run. Until then a
``prompts:/`` target is refused with that message, rather than half-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from appliance.errors import BadInput
from appliance.evals.cases import Case
from appliance.registry.refs import parse_ref

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
                               "variables are for prompt targets (prompts:/NAME@ALIAS), "
                               "which come with the prompt registry")

    def request(self, case: Case, run_params: dict[str, Any]) -> Request:
        if case.messages is None:
            raise BadInput(f"case {case.id!r} has no messages")
        return Request(messages=case.messages, params={**run_params, **case.params})


def parse_target(text: str) -> Target:
    """A run's target from its text; ``BadInput`` for one that is malformed or not
    available yet."""
    if not isinstance(text, str) or not text:
        raise BadInput("the target is empty; give NAME@VERSION or NAME@ALIAS of a language "
                       "model")
    if text.startswith(PROMPT_SCHEME) or text.startswith("prompts:"):
        raise BadInput(f"{text}: prompt targets come with the prompt registry and are not "
                       "available yet; evaluate a language model (NAME@VERSION or "
                       "NAME@ALIAS) with cases that give 'messages'")
    ref = parse_ref(text, "target")
    if ref.version is None and ref.alias is None:
        raise BadInput(f"target {text!r}: give NAME@VERSION or NAME@ALIAS (for the "
                       "production version: NAME@production)")
    return ModelTarget(text)
