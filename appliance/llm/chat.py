"""Chat messages into a prompt: the model's own chat template, or the plain one.

A model whose tokenizer configuration carries a ``chat_template`` (Jinja, as
Hugging Face tokenizers ship it, in ``tokenizer_config.json`` or
``chat_template.jinja``) gets its messages rendered by it, in a sandbox. Any other
model gets the plain template, documented in docs/llm.md::

    system: You answer briefly.
    user: What is the capital of Veltria?
    assistant:

one ``role: content`` line per message, then ``assistant:`` for the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.errors import BadInput

ROLES = ("system", "user", "assistant", "developer", "tool")


def plain_template(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def check_messages(value: Any) -> list[dict[str, str]]:
    """OpenAI's ``messages``: a non-empty list of ``{role, content}``; content may be a
    string or a list of text parts. Errors name the message and field (``param``)."""
    if not isinstance(value, list) or not value:
        raise BadInput("'messages' must be a non-empty list of {role, content} objects",
                       param="messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise BadInput(f"{where} must be an object with 'role' and 'content'", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise BadInput(f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}",
                           param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):
                    raise BadInput(f"{where}.content[{j}] must be a text part "
                                   "{type: 'text', text}", param=f"{where}.content")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise BadInput(f"{where}.content must be a string", param=f"{where}.content")
        out.append({"role": role, "content": content})
    if all(not m["content"].strip() for m in out):
        raise BadInput("every message is empty; say something", param="messages")
    return out


class ChatTemplate:
    """The template of one model folder, compiled once."""

    def __init__(self, folder: str | Path) -> None:
        self.source = _find_template(Path(folder))
        self._template: Any = None
        self.special: dict[str, str] = {}
        if self.source is not None:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _raise
            try:
                self._template = env.from_string(self.source)
            except TemplateError as exc:
                raise BadInput(f"{folder}: the chat template does not compile: {exc}") from None
            self.special = _special_tokens(Path(folder))

    @property
    def kind(self) -> str:
        return "model" if self._template is not None else "plain"

    def render(self, messages: list[dict[str, str]]) -> str:
        if self._template is None:
            return plain_template(messages)
        from jinja2.exceptions import TemplateError

        try:
            return str(self._template.render(messages=messages, add_generation_prompt=True,
                                             **self.special))
        except TemplateError as exc:
            raise BadInput(f"the model's chat template refused the messages: {exc}",
                           param="messages") from None


def _raise(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _find_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        template = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(template, str) and template:
            return template
        if isinstance(template, list):  # named templates: the default one
            for item in template:
                if isinstance(item, dict) and item.get("name") == "default":
                    return str(item.get("template") or "") or None
    return None


def _special_tokens(folder: Path) -> dict[str, str]:
    """``bos_token`` and ``eos_token`` as templates expect them."""
    config = folder / "tokenizer_config.json"
    out: dict[str, str] = {}
    if not config.is_file():
        return out
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return out
    for key in ("bos_token", "eos_token"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out
