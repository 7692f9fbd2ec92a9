"""Promotion: gates, staged rollout, rollback, signed models and model cards.

The entry points the CLI and the console call:

- ``promote(home, ref, principal, to=, force=, reason=, breaking_change=, config=)``
- ``evaluate_gates(home, ref, ...)``: the gate report without promoting
- ``approve(home, ref, principal, comment=)``
- ``rollback(home, name, principal, reason=)``
- ``advance_rollouts(home, now=, name=)``, ``rollout_status(db, name)``,
  ``abort_rollout(home, name, actor=, reason=)``
- ``model_card(home, ref)`` with ``render_markdown`` / ``render_html``
- ``set_policy(db, name, text, actor=)``, ``get_policy(db, name)``
"""

from appliance.promotion.card import model_card, render_html, render_markdown
from appliance.promotion.gates import Gate, GateReport
from appliance.promotion.policy import DEFAULT_POLICY, get_policy, policy_source, set_policy
from appliance.promotion.rollout import (
    State,
    Step,
    abort_rollout,
    advance_rollouts,
    rollout_status,
)
from appliance.promotion.service import (
    PromotionRefused,
    PromotionResult,
    approve,
    evaluate_gates,
    gate_reports,
    list_approvals,
    promote,
    rollback,
)
from appliance.registry.signing import get_signature, verify_model

__all__ = [
    "DEFAULT_POLICY",
    "Gate",
    "GateReport",
    "PromotionRefused",
    "PromotionResult",
    "State",
    "Step",
    "abort_rollout",
    "advance_rollouts",
    "approve",
    "evaluate_gates",
    "gate_reports",
    "get_policy",
    "get_signature",
    "list_approvals",
    "model_card",
    "policy_source",
    "promote",
    "render_html",
    "render_markdown",
    "rollback",
    "rollout_status",
    "set_policy",
    "verify_model",
]
