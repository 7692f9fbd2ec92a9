"""Prompts as the serving daemon sees them: ``"model": "prompts:/NAME@ALIAS"``.

``PromptSource`` reads prompt versions from the database (through the storage layer,
as the daemon reads models) and keeps them while neither prompt aliases nor model
aliases have moved: the fingerprints are read again at most every ``max_age_s``, so
a promotion or rollback of a prompt is picked up without a restart.

``apply`` turns a chat request naming a prompt into the request for its model: the
template's messages rendered with the request's ``variables``, then the messages the
client sent; the prompt's parameters as defaults the request may override.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadInput, NotFound
from appliance.prompts.registry import PRODUCTION, PromptVersion, fingerprint, resolve
from appliance.registry import alias_fingerprint, parse_ref
from appliance.registry import resolve as resolve_model
from appliance.storage.db import Database

SCHEME = "prompts:/"


def is_prompt_ref(model: Any) -> bool:
    return isinstance(model, str) and model.startswith(SCHEME)


@dataclass(frozen=True)
class ServedPrompt:
    """A prompt version and the model that answers for it: ``model_version`` None means
    the model's production version (what the daemon serves by name)."""

    prompt: PromptVersion
    model_name: str
    model_version: int | None


class PromptSource:
    def __init__(self, open_db: Callable[[], Database],
                 max_age_s: float = 0.5) -> None:
        self._open_db = open_db
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._cache: dict[str, ServedPrompt] = {}
        self._fingerprint: tuple[int, int] | None = None
        self._checked = float("-inf")

    def get(self, model: str) -> ServedPrompt:
        """The prompt version ``prompts:/NAME[@ALIAS|@VERSION]`` names now (``NAME`` alone:
        production); 404 (``param: model``) for one that does not exist."""
        text = model[len(SCHEME):]
        try:
            parsed = parse_ref(text, "prompt reference")
        except BadInput as exc:
            raise BadInput(f"'model' {model!r}: {exc.message}; expected "
                           "prompts:/NAME@ALIAS or prompts:/NAME@VERSION", param="model") from None
        key = str(parsed) if (parsed.version or parsed.alias) else f"{parsed.name}@{PRODUCTION}"
        with self._lock:
            now = time.monotonic()
            db: Database | None = None
            try:
                if now - self._checked >= self._max_age_s:
                    db = self._open_db()
                    current = (fingerprint(db), alias_fingerprint(db))
                    if current != self._fingerprint:
                        self._cache.clear()
                        self._fingerprint = current
                    self._checked = now
                found = self._cache.get(key)
                if found is None:
                    if db is None:
                        db = self._open_db()
                    found = self._cache[key] = _load(db, key)
                return found
            finally:
                if db is not None:
                    db.close()


def _load(db: Database, key: str) -> ServedPrompt:
    try:
        pv = resolve(db, key, latest=False)
    except NotFound:
        raise NotFound(f"the prompt '{key}' does not exist; see 'appliance prompts list'",
                       param="model") from None
    target = parse_ref(pv.spec.model, "model")
    if target.version is not None:
        return ServedPrompt(pv, target.name, target.version)
    if target.alias is None or target.alias == PRODUCTION:
        return ServedPrompt(pv, target.name, None)
    try:
        mv = resolve_model(db, pv.spec.model)
    except NotFound:
        raise NotFound(f"prompt {pv.ref} is for the model '{pv.spec.model}', which does not "
                       "exist", param="model") from None
    return ServedPrompt(pv, target.name, mv.version)


def apply(served: ServedPrompt, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request for the prompt's model: ``messages`` are the rendered template
    followed by the client's own, the prompt's parameters fill what the request leaves
    out, and ``model`` is the model's name."""
    values = doc.get("variables")
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise BadInput("'variables' must be an object of variable names to values",
                       param="variables")
    messages: list[Any] = list(served.prompt.spec.render(values))
    extra = doc.get("messages")
    if extra is not None:
        if not isinstance(extra, list):
            raise BadInput("'messages' must be a list of {role, content} objects, sent after "
                           "the prompt's own", param="messages")
        messages.extend(extra)
    out = {k: v for k, v in doc.items() if k != "variables"}
    for key, value in served.prompt.spec.parameters:
        if key == "max_tokens" and out.get("max_completion_tokens") is not None:
            continue
        if out.get(key) is None:
            out[key] = value
    out["model"] = served.model_name
    out["messages"] = messages
    return out

