"""Run-time guardrails for language models: input checks, a canary, output checks.

The API the serving edge calls (the wiring into ``serving/http/openai.py`` is a later step;
see docs/guardrails.md)::

    from appliance import guardrails

    policies = guardrails.load_policies(config["guardrails.policies"])   # once, at start
    guard = guardrails.Guard(guardrails.load_classifier(db, blobs, config["guardrails.classifier"]))

    policy = policies.for_request(model="assistant", prompt=None)
    verdict = guard.check_input(user_text, policy)          # Verdict
    if verdict.blocked:
        raise guardrails.GuardrailBlocked(verdict)           # 400, code 'guardrail'
    system, canary = guard.protect_system_prompt(system_prompt, policy)
    ...generate with `system`...
    verdict = guard.check_output(answer, policy, system_prompt=system_prompt, canary=canary)
    if verdict.blocked: withhold the answer; else send verdict.text (masked when redacted)

Every verdict has ``as_dict()`` for the request log, and ``action`` / ``triggered`` for
metrics. Training, registering and evaluating the classifier: ``service.py``.
"""

from appliance.guardrails.guard import (
           CheckResult,
           Guard,
           GuardrailBlocked,
           Verdict,
           load_classifier,
)
from appliance.guardrails.policy import Action, Policy, PolicySet
from appliance.guardrails.policy import load as load_policies

__all__ = ["Action", "CheckResult", "Guard", "GuardrailBlocked", "Policy", "PolicySet",
           "Verdict", "load_classifier", "load_policies"]
