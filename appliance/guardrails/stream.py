"""Output checks on a streamed answer, as it is generated: ``StreamScreen``.

Text a client has received can not be called back, so a streamed answer holds back what
could still become part of a match, and only that: each piece the model generates is
added to the answer, and the text is passed on up to the first place from which a match
of a check that blocks or masks could still run on (``output.UNFINISHED``: the start of a
word that could be an e-mail address's, the ``AKIA`` of an access key, a prefix of the
canary or of its digits spelled out, a run of digits that could be a card number, the
words that repeat the system prompt, ...), masked where a check redacts. Ordinary prose
goes out as it comes. At most ``hold`` characters are held back: past that, text goes
out even where a match could still begin. A match found is held whole until it is
complete, so it goes out masked or not at all.

Why that suffices: a canary or a secret or personal-data match of at most ``hold``
characters begins, at every step before it is complete, with text that one of the
unfinished forms matches to the end of the answer, so none of it has been passed on when
it is recognised. A match longer than that (a JSON web token or a private key of several
hundred characters) can begin to go out before it is recognised. System-prompt leakage
is a share of the whole answer: it is counted as the answer goes, and the run of words
that repeats the prompt is held back (within ``hold``), so the stream stops (or masks)
before that run is out; repeated words sent before the share reached the threshold have
been sent.

Each step costs what the new text costs: every pattern goes on from where the text
behind it was settled (its last match, or the first place a match could still begin),
and the leakage count from the last words counted. A match is settled once it ends
before the first place where one could still begin: the text it was read from can no
longer change it.

``feed(piece)`` gives the text to send now ('' while it is held); after a block,
``blocked`` is the verdict and nothing more is sent. ``finish()`` gives the rest at the
end, and ``verdict()`` the verdict to log: the blocking one, else the output checks over
the whole answer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace

from appliance.guardrails import output
from appliance.guardrails.guard import CheckResult, Guard, Verdict
from appliance.guardrails.normalise import normalise
from appliance.guardrails.output import Span
from appliance.guardrails.policy import Action, Policy

#: The most characters held back: above the canary spelled out with a separator between
#: its digits (46), an IBAN with spaces (42), an AWS secret key's assignment (about 65) and
#: a GitHub fine-grained token (93).
HOLD = 128

_WORD = re.compile(r"\w+")
# A trailing run of hex digits and separators: where the canary's digits, spelled out,
# could be under way.
_HEX_TAIL = re.compile(r"[0-9a-f][0-9a-f\s\-_.]*\Z", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")


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
        # The checks that mask or block (flagged ones are only logged, from verdict()).
        self._checks = {
            c: rule.action for c in ("canary", "secrets", "personal_data")
            if (rule := policy.enabled(c)) is not None and rule.action is not Action.FLAG
            and (c != "canary" or canary)}
        self._unfinished = output.unfinished(tuple(self._checks)) if self._checks else None
        self._body = (canary or "").lower().split("-", 1)[-1]
        kinds = [k for c in self._checks for k, *_ in output.SCANS.get(c, ((c,),))]
        self._resume = dict.fromkeys(kinds, 0)  # where each pattern goes on
        self._since = dict.fromkeys(self._checks, 0)  # and each check, the first of them
        self._found: dict[str, list[Span]] = {c: [] for c in self._checks}  # settled, unsent
        self._taken: list[Span] = []  # settled e-mails, IBANs and cards (for phones)
        self._digits = 0
        self._at = False
        # Leakage, counted as the answer goes over its words (when it blocks or masks).
        rule = policy.enabled("prompt_leak") if system_prompt else None
        self._grams, self._n = output.prompt_grams(system_prompt or "")
        self._leak = rule if self._grams and rule and rule.action is not Action.FLAG else None
        self._starts = {g[:k] for g in self._grams for k in range(1, self._n)}
        self._firsts = {g[0][:k] for g in self._grams for k in range(1, len(g[0]) + 1)}
        self._seen: set[tuple[str, ...]] = set()
        self._words: list[str] = []  # the last n words counted (normalised)
        self._word_starts: list[int] = []  # and where they begin
        self._word_at = 0  # where the next word is looked for
        self._run: int | None = None  # where the words repeating the prompt began
        self._prefix: int | None = None  # where the last words that could begin one begin
        self._hit = False  # whether the share has reached the threshold
        self._leaked: list[Span] = []  # their spans not yet sent

    def feed(self, piece: str) -> str:
        """Add a generated piece; the text to send now (masked), '' while held or after a
        block."""
        if self.blocked is not None:
            return ""
        self.raw += piece
        if "personal_data" in self._checks:
            self._digits += sum(map(piece.count, "0123456789"))
            self._at = self._at or "@" in piece
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
        raw = self.raw
        size = len(raw)
        settled = size if final else self._open(size)
        masks: list[Span] = []
        blocking: dict[str, set[str]] = {}
        for check, action in self._checks.items():
            spans = self._scan(check, settled)
            if spans:
                if action is Action.BLOCK:
                    blocking[check] = {s.kind for s in spans}
                masks += output.merge(spans)
        if self._leak is not None and self._count(size, final):
            if self._leak.action is Action.BLOCK:
                blocking["prompt_leak"] = set()
            else:
                masks += self._leaked
        if blocking:
            self.blocked = Verdict("output", self._results(blocking), "", self.elapsed_ms)
            return ""
        end = size if final else max(min(settled, self._held(size)), size - self.hold)
        if masks:
            masks = output.merge(masks)
            for span in reversed(masks):  # never cut a match: hold it whole
                if span.start < end < span.end:
                    end = span.start
        if end <= self.sent:
            return ""
        start, self.sent = self.sent, end
        if self._leaked:
            self._leaked = [s for s in self._leaked if s.end > end]
        if not masks:
            return raw[start:end]
        for check, spans in self._found.items():
            self._found[check] = [s for s in spans if s.end > end]
        inside = [Span(max(s.start, start) - start, min(s.end, end) - start, s.kind)
                  for s in masks if s.start < end and s.end > start]
        return output.redact(raw[start:end], inside)

    # -- canary, secrets, personal data ---------------------------------------------------

    def _open(self, size: int) -> int:
        """The first place from which a match could still run on (``size``: none)."""
        if self._unfinished is None:
            return size
        since = min(self._since.values())
        found = self._unfinished.search(self.raw, since)
        at = found.start() if found else size
        if "canary" in self._since:
            at = min(at, self._spelled(since, size))
        return at

    def _spelled(self, since: int, size: int) -> int:
        """Where the canary's digits, spelled out, could be under way at the end."""
        run = _HEX_TAIL.search(self.raw, since)
        if run is None:
            return size
        at: list[int] = []
        i = size - 1
        while i >= run.start() and len(at) < len(self._body):
            if self.raw[i] in _HEX:
                at.append(i)
            i -= 1
        at.reverse()
        digits = "".join(self.raw[i] for i in at).lower()
        for j, i in enumerate(at):
            if self._body.startswith(digits[j:]):
                return i
        return size

    def _scan(self, check: str, settled: int) -> list[Span]:
        """The check's spans to mask (or that block), read from where its patterns went
        on: the settled ones are kept until sent, the others found again next time."""
        raw = self.raw
        since = self._since[check]
        if check == "canary":
            assert self.canary is not None
            if output.HINTS["canary"].search(raw, since) is None:  # no 16 hex digits
                self._since[check] = self._resume["canary"] = max(since, settled)
                return self._found[check]
            found = output.canary_spans(raw, self.canary, since)
            spans = self._settle(check, "canary", ((s.start, s.end, s) for s in found),
                                 settled)
            self._since[check] = self._resume["canary"]
            return self._found[check] + spans if spans else self._found[check]
        if output.HINTS[check].search(raw, since) is None:  # nothing to look at
            self._since[check] = max(since, settled)
            return self._found[check]
        tail = raw[since:]
        lower = tail.lower()
        spans = []
        for kind, rx, group, keys, lowered in output.SCANS[check]:
            self._resume[kind] = max(self._resume[kind], since)
            if (keys is not None and not any(k in (lower if lowered else tail) for k in keys)) \
                    or (check == "personal_data" and (kind == "email" and not self._at
                                                      or kind != "email" and self._digits < 8)):
                self._resume[kind] = max(self._resume[kind], settled)
                continue
            taken = self._taken + spans
            matches = ((m.start(), m.end(), Span(m.start(group), m.end(group), kind)
                        if output.accept(kind, m.group(), taken, m.start(), m.end()) else None)
                       for m in rx.finditer(raw, self._resume[kind]))
            spans += self._settle(check, kind, matches, settled)
        self._since[check] = min(self._resume[kind] for kind, *_ in output.SCANS[check])
        if check == "personal_data":  # settled spans a phone number can no longer meet
            self._taken = [s for s in self._taken if s.end > self._resume["phone"]]
        return self._found[check] + spans

    def _settle(self, check: str, kind: str,
                matches: Iterator[tuple[int, int, Span | None]], settled: int) -> list[Span]:
        """Keep the matches that end before ``settled`` (and go on after them); the others
        are returned, to be found again."""
        open_at: int | None = None
        unsettled: list[Span] = []
        for start, end, span in matches:
            if open_at is None and end <= settled:
                if span is not None:
                    self._found[check].append(span)
                    if check == "personal_data" and kind != "phone":
                        self._taken.append(span)
                continue
            open_at = start if open_at is None else open_at
            if span is not None:
                unsettled.append(span)
        resume = settled if open_at is None else min(settled, open_at)
        self._resume[kind] = max(self._resume[kind], resume)
        return unsettled

    # -- system-prompt leakage ------------------------------------------------------------

    def _count(self, size: int, final: bool) -> bool:
        """Count the new words' n-grams that repeat the system prompt's; whether their
        share has reached the threshold."""
        assert self._leak is not None
        raw, n, words, starts = self.raw, self._n, self._words, self._word_starts
        m = _WORD.search(raw, self._word_at)
        if m is None or (m.end() == size and not final):  # no new word (or it may go on)
            return self._hit
        while m is not None and (m.end() < size or final):
            self._word_at = m.end()
            words.append(normalise(m.group()))
            starts.append(m.start())
            if len(words) > n:
                del words[0], starts[0]
            if len(words) == n:
                gram = tuple(words)
                if gram in self._grams:
                    self._seen.add(gram)
                    self._run = starts[0] if self._run is None else self._run
                    if self._leaked and starts[0] <= self._leaked[-1].end + 1:
                        self._leaked[-1] = Span(self._leaked[-1].start, m.end(),
                                                "system_prompt")
                    else:
                        self._leaked.append(Span(starts[0], m.end(), "system_prompt"))
                else:
                    self._run = None
            m = _WORD.search(raw, self._word_at)
        self._prefix = next((starts[-k] for k in range(min(len(words), n - 1), 0, -1)
                             if tuple(words[-k:]) in self._starts), None)
        limit = self._leak.threshold if self._leak.threshold is not None else 0.5
        self._hit = bool(self._seen) and len(self._seen) / len(self._grams) >= limit
        return self._hit

    def _held(self, size: int) -> int:
        """Where the words that could repeat the system prompt begin (``size``: none)."""
        if self._leak is None:
            return size
        at = min(size if self._run is None else self._run,
                 size if self._prefix is None else self._prefix)
        last = self.raw[-1:]
        if last.isalnum() or last == "_":  # a last word, which may go on
            word = _WORD.search(self.raw, self._word_at)
            if word is not None and normalise(word.group()) in self._firsts:
                at = min(at, word.start())
        return at

    def _results(self, blocking: dict[str, set[str]]) -> list[CheckResult]:
        """The results of a blocked answer: the checks over the text so far, with those
        that blocked."""
        results, _ = self.guard.output_checks(self.raw, self.policy,
                                              system_prompt=self.system_prompt,
                                              canary=self.canary)
        for i, r in enumerate(results):
            if r.check in blocking and not r.triggered:
                results[i] = CheckResult(r.check, True, Action.BLOCK, r.score,
                                         ", ".join(sorted(blocking[r.check])))
        return results
