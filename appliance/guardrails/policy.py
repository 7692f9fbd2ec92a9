"""Policies: which checks run for a model or a prompt, their thresholds and actions.

A policy file (``guardrails.policies``) is YAML::

    default:                 # every model and prompt, unless overridden
      decode: true           # read base64, hex and rot13 wrappers too
      checks:
        injection_patterns: {action: block}
        injection_classifier: {action: block, threshold: 0.5}
        canary: {action: block}
        prompt_leak: {action: block, threshold: 0.5}
        secrets: {action: redact}
        personal_data: {action: flag}
    models:
      assistant:
        checks: {personal_data: {action: redact}}
    prompts:
      support-bot:
        checks: {injection_classifier: off}

A model's entry overrides the default check by check, and a prompt's entry overrides the
model's; ``off`` turns a check off. Without a file, ``DEFAULT`` applies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import BadInput, ConfigError


class Action(StrEnum):
    """What a triggered check does; the strongest one of a verdict wins."""

    FLAG = "flag"      # answer as usual; the verdict is logged and counted
    REDACT = "redact"  # mask the spans found (output checks)
    BLOCK = "block"    # refuse: 400 with code 'guardrail', or the answer withheld

    @property
    def rank(self) -> int:
        return {"flag": 1, "redact": 2, "block": 3}[self.value]


INPUT_CHECKS = ("injection_patterns", "injection_classifier")
OUTPUT_CHECKS = ("canary", "prompt_leak", "secrets", "personal_data")
THRESHOLDS = {"injection_classifier": 0.5, "prompt_leak": 0.5}
# Masking a prompt injection means nothing: input checks block or flag.
ALLOWED: dict[str, tuple[Action, ...]] = {name: (Action.FLAG, Action.BLOCK)
                                           for name in INPUT_CHECKS}
ALLOWED.update({name: (Action.FLAG, Action.REDACT, Action.BLOCK) for name in OUTPUT_CHECKS})

DEFAULT: dict[str, Any] = {
    "decode": True,
    "checks": {
        "injection_patterns": {"action": "block"},
        "injection_classifier": {"action": "block", "threshold": 0.5},
        "canary": {"action": "block"},
        "prompt_leak": {"action": "block", "threshold": 0.5},
        "secrets": {"action": "redact"},
        "personal_data": {"action": "flag"},
    },
}


@dataclass(frozen=True)
class CheckPolicy:
    action: Action
    threshold: float | None = None


@dataclass(frozen=True)
class Policy:
    """The effective policy of one request."""

    checks: dict[str, CheckPolicy] = field(default_factory=dict)
    decode: bool = True

    def enabled(self, name: str) -> CheckPolicy | None:
        return self.checks.get(name)


def _check(name: str, raw: Any, where: str) -> CheckPolicy | None:
    if raw in ("off", False, None):
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: check '{name}' must be a mapping or 'off'")
    unknown = set(raw) - {"action", "threshold"}
    if unknown:
        raise ConfigError(f"{where}: check '{name}' has unknown key '{sorted(unknown)[0]}'")
    try:
        action = Action(raw.get("action", "block"))
    except ValueError:
        raise ConfigError(f"{where}: check '{name}': action must be one of "
                          f"{', '.join(a.value for a in ALLOWED[name])}") from None
    if action not in ALLOWED[name]:
        raise ConfigError(f"{where}: check '{name}' can not {action.value}; it can "
                          f"{' or '.join(a.value for a in ALLOWED[name])}")
    threshold = raw.get("threshold", THRESHOLDS.get(name))
    if "threshold" in raw:
        if name not in THRESHOLDS:
            raise ConfigError(f"{where}: check '{name}' takes no threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0 <= threshold <= 1:
            raise ConfigError(f"{where}: check '{name}': threshold must be between 0 and 1")
    return CheckPolicy(action, None if threshold is None else float(threshold))


def _merge(base: dict[str, Any], over: Any, where: str) -> dict[str, Any]:
    if not isinstance(over, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = set(over) - {"decode", "checks"}
    if unknown:
        raise ConfigError(f"{where}: unknown key '{sorted(unknown)[0]}' (decode, checks)")
    out = copy.deepcopy(base)
    if "decode" in over:
        if not isinstance(over["decode"], bool):
            raise ConfigError(f"{where}: decode must be true or false")
        out["decode"] = over["decode"]
    checks = over.get("checks") or {}
    if not isinstance(checks, dict):
        raise ConfigError(f"{where}: checks must be a mapping")
    for name, raw in checks.items():
        if name not in ALLOWED:
            raise ConfigError(f"{where}: unknown check '{name}'; the checks are "
                              f"{', '.join(ALLOWED)}")
        if isinstance(raw, dict) and isinstance(out["checks"].get(name), dict):
            out["checks"][name] = {**out["checks"][name], **raw}
        else:
            out["checks"][name] = raw
    return out


def _build(raw: dict[str, Any], where: str) -> Policy:
    checks = {}
    for name, value in raw["checks"].items():
        made = _check(name, value, where)
        if made is not None:
            checks[name] = made
    return Policy(checks, bool(raw["decode"]))


@dataclass(frozen=True)
class PolicySet:
    """The default and the overrides; ``for_request`` gives a request's effective policy."""

    default: dict[str, Any]
    models: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in default"

    def for_request(self, model: str | None = None, prompt: str | None = None) -> Policy:
        raw, where = self.default, f"{self.source}: default"
        if model is not None and model in self.models:
            where = f"{self.source}: models.{model}"
            raw = _merge(raw, self.models[model], where)
        if prompt is not None and prompt in self.prompts:
            where = f"{self.source}: prompts.{prompt}"
            raw = _merge(raw, self.prompts[prompt], where)
        return _build(raw, where)


def parse(data: Any, source: str) -> PolicySet:
    """A policy set from parsed YAML; every entry is checked now, not at first use."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a guardrail policy file is a mapping")
    unknown = set(data) - {"default", "models", "prompts"}
    if unknown:
        raise ConfigError(f"{source}: unknown key '{sorted(unknown)[0]}' (default, models, "
                          "prompts)")
    default = _merge(DEFAULT, data.get("default") or {}, f"{source}: default")
    groups = {}
    for key in ("models", "prompts"):
        group = data.get(key) or {}
        if not isinstance(group, dict):
            raise ConfigError(f"{source}: {key} must map names to policies")
        groups[key] = group
    made = PolicySet(default, groups["models"], groups["prompts"], source)
    made.for_request()
    for name in made.models:
        made.for_request(model=name)
    for name in made.prompts:
        made.for_request(prompt=name)
    return made


def load(path: str | Path | None) -> PolicySet:
    """The policy file at ``path``; the built-in default when it is empty or None."""
    if not path:
        return parse({}, "built-in default")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInput(f"guardrails.policies: {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from exc
    return parse(data, str(path))
