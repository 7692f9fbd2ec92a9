"""Output checks on a streamed answer, as it is generated: ``StreamScreen``.

Text a client has received can not be called back, so a streamed answer is held back by a
window of ``HOLD`` characters: each piece the model generates is added to the answer, the
output checks read the held text together with the last ``CONTEXT`` characters sent,
and only what lies more than ``HOLD`` characters before the end is passed on, masked
where a check redacts. A match that reaches into the held text is held whole until it is
complete, so it goes out masked or not at all.

Why that suffices: a canary (23 characters, or its 16 digits spelled out with separators)
or a secret or personal-data match of at most ``HOLD`` characters can only be recognised
once its last character has been generated; by then none of its characters has been
passed on, since everything sent lay at least ``HOLD`` characters before the end. A
match longer than the window (a JSON web token or a private key of several hundred
characters) can begin to go out before it is recognised. System-prompt leakage is a
share of the whole answer: it is checked over everything generated so far, and the
repeated words sent before the share reached the threshold have been sent. (It is counted
as the answer goes, over the window of each step, so that a step costs the same late in a
long answer as early.)

``feed(piece)`` gives the text to send now ('' while it is held); after a block,
``blocked`` is the verdict and nothing more is sent. ``finish()`` gives the rest at the
end, and ``verdict()`` the verdict to log: the blocking one, else the output checks over
the whole answer.
"""

from __future__ import annotations

import time
from dataclasses import replace

from appliance.guardrails import output
from appliance.guardrails.guard import CheckResult, Guard, Verdict
from appliance.guardrails.policy import Action, Policy

#: Characters held back: above the canary spelled out with a separator between its
#: digits (46), an IBAN with spaces (42), an AWS secret key's assignment (about 65) and a
#: GitHub fine-grained token (93).
HOLD = 128
#: Characters already sent that each step reads again, before the held text: enough for a
#: word boundary or a word that began there.
CONTEXT = 32


class StreamScreen:
    """The output checks over one streamed answer."""

    def __init__(self, guard: Guard, policy: Policy, *, system_prompt: str | None = None,
                 canary: str | None = None, hold: int = HOLD) -> None:
        self.guard = guard
        self.policy = policy
        self.system_prompt = system_prompt
        self.canary = canary
        self.hold = hold
        self.raw = ""  # the answer as generated so far
        self.sent = 0  # how many of its characters have been passed on
        self.blocked: Verdict | None = None
        self.elapsed_ms = 0.0
        # Leakage, counted as the answer goes: the prompt's n-grams and those seen so far.
        self._leak = policy.enabled("prompt_leak") if system_prompt else None
        self._grams, self._n = output.prompt_grams(system_prompt or "")
        self._seen: set[tuple[str, ...]] = set()

    def feed(self, piece: str) -> str:
        """Add a generated piece; the text to send now (masked), '' while held or after a
        block."""
        if self.blocked is not None:
            return ""
        self.raw += piece
        return self._step(final=False)

    def finish(self) -> str:
        """The held rest, at the end of the answer ('' after a block)."""
        if self.blocked is not None:
            return ""
        return self._step(final=True)

    def verdict(self) -> Verdict:
        """The verdict to log: the one that blocked, else the checks over the whole answer
        (their time the sum of every step's)."""
        if self.blocked is not None:
            return self.blocked
        results, masks = self.guard.output_checks(
            self.raw, self.policy, system_prompt=self.system_prompt, canary=self.canary)
        text = output.redact(self.raw, masks) if masks else self.raw
        return Verdict("output", results, text, self.elapsed_ms)

    def _step(self, *, final: bool) -> str:
        started = time.perf_counter()
        text = self._release(final)
        self.elapsed_ms += (time.perf_counter() - started) * 1000
        if self.blocked is not None:
            self.blocked = replace(self.blocked, elapsed_ms=self.elapsed_ms)
        return text

    def _release(self, final: bool) -> str:
        since = max(0, self.sent - CONTEXT)
        results, masks = self.guard.output_checks(self.raw, self.policy, canary=self.canary,
                                                   since=since)
        if self._leak is not None and self._grams:
            seen, spans = output.repeated(self.raw[since:], self._grams, self._n)
            self._seen |= seen
            share = len(self._seen) / len(self._grams)
            limit = self._leak.threshold if self._leak.threshold is not None else 0.5
            hit = share >= limit and bool(self._seen)
            results.append(CheckResult("prompt_leak", hit, self._leak.action if hit else None,
                                       round(share, 4), "system_prompt" if hit else ""))
            if hit and self._leak.action is Action.REDACT:
                masks += [output.Span(s.start + since, s.end + since, s.kind) for s in spans]
        if any(r.triggered and r.action is Action.BLOCK for r in results):
            self.blocked = Verdict("output", results, "", self.elapsed_ms)
            return ""
        end = len(self.raw) if final else len(self.raw) - self.hold
        masks = output.merge(masks)
        for span in reversed(masks):  # never cut a match: hold it whole
            if span.start < end < span.end:
                end = span.start
        if end <= self.sent:
            return ""
        start, self.sent = self.sent, end
        inside = [output.Span(max(s.start, start) - start, min(s.end, end) - start, s.kind)
                  for s in masks if s.start < end and s.end > start]
        return output.redact(self.raw[start:end], inside)
