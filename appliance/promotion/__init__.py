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

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import lazy_exports

if TYPE_CHECKING:
    from appliance.promotion.card import model_card, render_html, render_markdown
    from appliance.promotion.gates import Gate, GateReport
    from appliance.promotion.policy import DEFAULT_POLICY, get_policy, policy_source, set_policy
    from appliance.promotion.records import gate_reports, list_approvals
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
        promote,
        rollback,
    )
    from appliance.registry.signing import get_signature, verify_model

#: name -> the module that defines it, imported when the name is first used (a command
#: that reads one policy need not load the gates, the rollout and the model cards)
_LAZY = {
    "model_card": "appliance.promotion.card",
    "render_html": "appliance.promotion.card",
    "render_markdown": "appliance.promotion.card",
    "Gate": "appliance.promotion.gates",
    "GateReport": "appliance.promotion.gates",
    "DEFAULT_POLICY": "appliance.promotion.policy",
    "get_policy": "appliance.promotion.policy",
    "policy_source": "appliance.promotion.policy",
    "set_policy": "appliance.promotion.policy",
    "State": "appliance.promotion.rollout",
    "Step": "appliance.promotion.rollout",
    "abort_rollout": "appliance.promotion.rollout",
    "advance_rollouts": "appliance.promotion.rollout",
    "rollout_status": "appliance.promotion.rollout",
    "PromotionRefused": "appliance.promotion.service",
    "PromotionResult": "appliance.promotion.service",
    "approve": "appliance.promotion.service",
    "evaluate_gates": "appliance.promotion.service",
    "gate_reports": "appliance.promotion.records",
    "list_approvals": "appliance.promotion.records",
    "promote": "appliance.promotion.service",
    "rollback": "appliance.promotion.service",
    "get_signature": "appliance.registry.signing",
    "verify_model": "appliance.registry.signing",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


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
