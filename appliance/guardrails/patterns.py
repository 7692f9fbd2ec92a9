"""Pattern heuristics: phrases that prompt injections and jailbreaks are made of.

Each pattern is a named regular expression over the normalised text (``normalise``:
case-folded, look-alikes mapped, whitespace collapsed). They are deliberately narrow: a
phrase must name what is overridden (instructions, rules, the system prompt), not merely
say "ignore" or "system", so that "ignore whitespace in git diff" or "the system
requirements" pass. The classifier catches what the patterns miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_W = r"[^.!?\n]{0,40}?"  # a few words within one sentence


@dataclass(frozen=True)
class Hit:
    pattern: str
    start: int
    end: int
    text: str


PATTERNS: dict[str, str] = {
    "ignore_instructions": (
        r"\b(?:ignore|disregard|forget|override|bypass|skip|drop)\b" + _W
        + r"\b(?:previous|prior|above|earlier|preceding|former|original|initial|all|any|your|"
        r"system|developer)\b" + _W
        + r"\b(?:instructions?|prompts?|rules|directives?|guidelines|guardrails|constraints|"
        r"programming|restrictions|context)\b"),
    "ignore_instructions_fr": (
        r"\b(?:ignore[rz]?|oublie[rz]?)\b" + _W
        + r"\b(?:instructions|consignes|règles)\b" + _W + r"\b(?:précédentes|ci-dessus)\b"),
    "ignore_instructions_de": (
        r"\b(?:ignoriere|ignorieren|vergiss|vergessen)\b" + _W
        + r"\b(?:vorherigen|bisherigen|obigen|vorigen|alle)\b" + _W
        + r"\b(?:anweisungen|instruktionen|regeln|vorgaben)\b"),
    "ignore_instructions_es": (
        r"\b(?:ignora|ignore|olvida)\b" + _W + r"\b(?:instrucciones|reglas)\b" + _W
        + r"\b(?:anteriores|previas)\b"),
    "new_persona": (
        r"\b(?:you are|you're|act as|pretend to be|roleplay as|from now on you are)\b" + _W
        + r"\b(?:dan|dude|stan|aim|an? (?:unfiltered|uncensored|unrestricted|jailbroken|amoral)"
        r"|in developer mode|no longer bound|free from|freed from)\b"),
    "do_anything_now": (
        r"\bdo anything now\b|\bjailbroken\b|\bjailbreak (?:mode|prompt)\b|"
        r"\b(?:enable|enter|activate|with|simulate) developer mode\b|"
        r"\bdeveloper mode (?:enabled|output|response)"),
    "no_restrictions": (
        r"\b(?:without|no|ignore|free of|not bound by|break free of|doesn't have|does not have|"
        r"don't have)\b" + r"[^.!?\n]{0,20}?"
        + r"\b(?:any )?(?:ethical|moral|content|safety|openai)?\s?(?:restrictions|filters|"
        r"censorship|guidelines|policies|limitations|constraints)\b"),
    "reveal_prompt": (
        r"\b(?:reveal|show|print|repeat|output|display|tell me|give me|write out|dump|leak)\b"
        + _W + r"\b(?:system prompt|initial (?:prompt|instructions)|hidden (?:prompt|"
        r"instructions)|your (?:original |secret |starting |initial )?instructions|"
        r"the (?:original|secret|starting|initial) instructions|(?:text|prompt) above)\b"),
    "fake_delimiter": (
        r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|\[/?inst\]|<</?sys>>|"
        r"(?:^|\s)#{2,}\s*(?:system|instruction)s?\s*:|\bend of (?:system )?prompt\b|"
        r"\bbegin (?:new )?system (?:prompt|message)\b"),
    "harm_framing": (
        r"\b(?:never refuse|must not refuse|cannot refuse|always answer|"
        r"never break character|opposite mode|evil (?:mode|confidant|bot))\b"),
}

_COMPILED = {name: re.compile(p) for name, p in PATTERNS.items()}
_ANY = re.compile("|".join(f"(?P<{name}>{p})" for name, p in PATTERNS.items()))


def first_hit(normalised: str) -> Hit | None:
    """The first pattern that matches, in one pass over the text."""
    m = _ANY.search(normalised)
    if m is None:
        return None
    name = m.lastgroup or next(k for k, v in m.groupdict().items() if v is not None)
    return Hit(name, m.start(), m.end(), m.group())


def hits(normalised: str) -> list[Hit]:
    """Every pattern's first match (for explaining a verdict)."""
    out = []
    for name, rx in _COMPILED.items():
        m = rx.search(normalised)
        if m:
            out.append(Hit(name, m.start(), m.end(), m.group()))
    return out
