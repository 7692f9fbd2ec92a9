"""Running the checks: ``Guard.check_input`` and ``Guard.check_output`` give a ``Verdict``.

A ``Verdict`` lists every check that ran (``CheckResult``: its name, whether it
triggered, score, detail and action) and the strongest action among those that
triggered: ``block`` beats ``redact`` beats ``flag``. ``Verdict.text`` is the text to pass
on: the answer with the spans masked when the action is ``redact``. ``GuardrailBlocked``
is the error the serving edge turns into a 400 with code ``guardrail`` (or, for an
answer, a withheld answer).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.errors import BadInput, NotFound
from appliance.guardrails import output, patterns
from appliance.guardrails.classifier import Classifier
from appliance.guardrails.decode import views
from appliance.guardrails.normalise import changed_by_normalising, normalise
from appliance.guardrails.policy import Action, Policy
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database


@dataclass(frozen=True)
class CheckResult:
    check: str
    triggered: bool
    action: Action | None = None  # the policy's action, when triggered
    score: float | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value if self.action else None
        return d


@dataclass(frozen=True)
class Verdict:
    stage: str  # input or output
    results: list[CheckResult]
    text: str  # what to pass on (masked when redacted)
    elapsed_ms: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. "decoded base64"

    @property
    def action(self) -> Action | None:
        acts = [r.action for r in self.results if r.triggered and r.action is not None]
        return max(acts, key=lambda a: a.rank) if acts else None

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK

    @property
    def triggered(self) -> list[str]:
        return [r.check for r in self.results if r.triggered]

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "action": self.action.value if self.action else None,
                "triggered": self.triggered, "results": [r.as_dict() for r in self.results],
                "notes": self.notes, "elapsed_ms": round(self.elapsed_ms, 3)}


class GuardrailBlocked(BadInput):
    """A request or an answer a guardrail blocked; the edge answers 400, code 'guardrail'."""

    code = "guardrail"

    def __init__(self, verdict: Verdict, *, answer: bool = False) -> None:
        checks = ", ".join(r.check for r in verdict.results if r.triggered
                           and r.action is Action.BLOCK)
        super().__init__(f"the answer was withheld by the guardrails ({checks})" if answer
                         else f"refused by the guardrails ({checks})")
        self.verdict = verdict


def load_classifier(db: Database, blobs: BlobStore, ref: str) -> Classifier | None:
    """The classifier version ``ref`` names, or None when the model has no version yet."""
    from appliance.registry.versions import resolve

    try:
        mv = resolve(db, ref)
    except NotFound:
        return None
    return Classifier.from_bytes(blobs.read_bytes(mv.onnx_digest), mv.ref)


@dataclass
class Guard:
    """The checks with their classifier. One per serving process; thread-safe to call."""

    classifier: Classifier | None = None

    # -- input --------------------------------------------------------------------------

    def check_input(self, text: str, policy: Policy) -> Verdict:
        started = time.perf_counter()
        notes = []
        norm = normalise(text)
        if changed_by_normalising(text, norm):
            notes.append("normalised hidden or look-alike characters")
        texts, raws = [norm], [text]
        if policy.decode:
            for v in views(text):
                notes.append(f"decoded {v.how}")
                texts.append(normalise(v.text))
                raws.append(v.text)
        results = []
        rule = policy.enabled("injection_patterns")
        if rule is not None:
            hit = next((h for h in map(patterns.first_hit, texts) if h is not None), None)
            results.append(CheckResult(
                "injection_patterns", hit is not None, rule.action if hit else None,
                1.0 if hit else 0.0, f"{hit.pattern}: {hit.text[:80]!r}" if hit else ""))
        rule = policy.enabled("injection_classifier")
        if rule is not None:
            if self.classifier is None:
                results.append(CheckResult("injection_classifier", False,
                                           detail="no classifier registered"))
            else:
                score = float(self.classifier.score_normalised(texts, raws).max())
                over = score >= (rule.threshold if rule.threshold is not None else 0.5)
                results.append(CheckResult("injection_classifier", over,
                                           rule.action if over else None, round(score, 4),
                                           self.classifier.ref))
        return Verdict("input", results, text, (time.perf_counter() - started) * 1000, notes)

    # -- system prompt and output -------------------------------------------------------

    @staticmethod
    def protect_system_prompt(system_prompt: str, policy: Policy) -> tuple[str, str | None]:
        """(the system prompt to send, its canary or None when the policy has no canary)."""
        if policy.enabled("canary") is None:
            return system_prompt, None
        token = output.new_canary()
        return output.add_canary(system_prompt, token), token

    def check_output(self, answer: str, policy: Policy, *, system_prompt: str | None = None,
                     canary: str | None = None) -> Verdict:
        started = time.perf_counter()
        results, masks = self.output_checks(answer, policy, system_prompt=system_prompt,
                                            canary=canary)
        text = output.redact(answer, masks) if masks else answer
        return Verdict("output", results, text, (time.perf_counter() - started) * 1000)

    @staticmethod
    def output_checks(answer: str, policy: Policy, *, system_prompt: str | None = None,
                      canary: str | None = None
                      ) -> tuple[list[CheckResult], list[output.Span]]:
        """The output checks' results and the spans to mask (offsets in ``answer``)."""
        results: list[CheckResult] = []
        masks: list[output.Span] = []

        def add(name: str, spans: list[output.Span], score: float | None = None,
                triggered: bool | None = None) -> None:
            rule = policy.enabled(name)
            if rule is None:
                return
            hit = bool(spans) if triggered is None else triggered
            kinds = sorted({s.kind for s in spans})
            results.append(CheckResult(name, hit, rule.action if hit else None, score,
                                       ", ".join(kinds) if hit else ""))
            if hit and rule.action is Action.REDACT:
                masks.extend(spans)

        if canary:
            add("canary", output.canary_spans(answer, canary))
        if system_prompt:
            rule = policy.enabled("prompt_leak")
            if rule is not None:
                share, spans = output.leakage(answer, system_prompt)
                limit = rule.threshold if rule.threshold is not None else 0.5
                add("prompt_leak", spans, round(share, 4), share >= limit and bool(spans))
        if policy.enabled("secrets") is not None:
            add("secrets", output.secret_spans(answer))
        if policy.enabled("personal_data") is not None:
            add("personal_data", output.personal_spans(answer))
        return results, masks
