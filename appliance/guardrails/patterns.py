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

# Words a pattern can not match without (lower case): a pattern runs only on a text that
# holds one of them, a substring search in C, so most ordinary prompts run no regex at all.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "ignore_instructions": ("ignor", "disregard", "forget", "override", "bypass", "skip",
                            "drop"),
    "ignore_instructions_fr": ("ignor", "oubli"),
    "ignore_instructions_de": ("ignor", "vergiss", "vergessen"),
    "ignore_instructions_es": ("ignor", "olvida"),
    "new_persona": ("you are", "you're", "act as", "pretend", "roleplay"),
    "do_anything_now": ("anything now", "jailbr", "developer mode"),
    "no_restrictions": ("restriction", "filter", "censor", "guideline", "polic", "limitation",
                        "constraint"),
    "reveal_prompt": ("prompt", "instruction", "text above"),
    "fake_delimiter": ("<|", "inst]", "<<", "##", "end of", "begin"),
    "harm_framing": ("refuse", "always answer", "character", "opposite mode", "evil"),
}
_COMPILED = {name: re.compile(p) for name, p in PATTERNS.items()}
# The plain alternative, one regular expression for all (the benchmark's baseline).
ANY = re.compile("|".join(f"(?P<{name}>{p})" for name, p in PATTERNS.items()))


def first_hit(normalised: str) -> Hit | None:
    """The earliest match among the patterns whose keywords the text holds."""
    best: Hit | None = None
    for name, rx in _COMPILED.items():
        if not any(k in normalised for k in KEYWORDS[name]):
            continue
        m = rx.search(normalised)
        if m and (best is None or m.start() < best.start):
            best = Hit(name, m.start(), m.end(), m.group())
    return best


def hits(normalised: str) -> list[Hit]:
    """Every pattern's first match (for explaining a verdict)."""
    out = []
    for name, rx in _COMPILED.items():
        m = rx.search(normalised)
        if m:
            out.append(Hit(name, m.start(), m.end(), m.group()))
    return out
