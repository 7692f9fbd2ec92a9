"""Names and references: ``NAME``, ``NAME@VERSION`` (1, 2, 3...) or ``NAME@ALIAS``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.errors import BadInput

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInput(
            f"invalid {what} {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise BadInput(
            f"invalid alias {alias!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
            "with a letter (a number would read as a version)"
        )
    return alias


@dataclass(frozen=True)
class Ref:
    """A parsed reference; at most one of ``version`` and ``alias`` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str, what: str = "reference") -> Ref:
    if not isinstance(text, str) or not text:
        raise BadInput(f"empty {what}; expected NAME, NAME@VERSION or NAME@ALIAS")
    name, sep, selector = text.partition("@")
    check_name(name, what=f"name in {what} {text!r}")
    if not sep:
        return Ref(name)
    if selector.isdigit():
        version = int(selector)
        if version < 1:
            raise BadInput(f"{what} {text!r}: versions start at 1")
        return Ref(name, version=version)
    return Ref(name, alias=check_alias(selector))
