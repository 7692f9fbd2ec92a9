"""Promote and roll back: the only ways a prompt version reaches ``production`` and leaves.

Who may: as for models. Promoting needs ``prompts.promote`` and rolling back
``prompts.rollback`` (admin and operator); ``--force`` past failed gates needs an admin
and a reason and is audited as ``prompt.promote.forced``.

Gates: ``GATES`` is the list of checks a candidate must pass, each a small named
function ``(db, candidate, production) -> GateResult``. It is empty for now: the gates
that score a prompt on an evaluation set belong there when evaluation sets exist. A
refused promotion is audited (``prompt.promote.refused``) and moves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance import audit
from appliance.auth import Principal, authorize
from appliance.errors import BadInput, Conflict, NotFound, OperationFailed
from appliance.prompts.registry import (
    PRODUCTION,
    PromptAliasMove,
    PromptVersion,
    get_version_by_id,
    move_alias_in_transaction,
    resolve,
)
from appliance.registry.refs import parse_ref
from appliance.storage.db import Database, immediate

ROLLBACK_PREFIX = "rollback of "


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Gate = Callable[[Database, PromptVersion, PromptVersion | None], GateResult]

#: The gates of a prompt promotion, run in order. None yet: evaluation-set gates go here.
GATES: tuple[Gate, ...] = ()


class PromptPromotionRefused(OperationFailed):
    def __init__(self, ref: str, results: list[GateResult]) -> None:
        failed = [f"{r.gate} ({r.detail})" if r.detail else r.gate
                  for r in results if not r.passed]
        super().__init__(f"{ref} was not promoted: gate(s) failed: {'; '.join(failed)}")
        self.results = results


@dataclass(frozen=True)
class PromptPromotion:
    ref: str
    gates: list[GateResult]
    forced: bool
    move: PromptAliasMove

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "forced": self.forced,
                "gates": [g.as_dict() for g in self.gates], "move": self.move.as_dict()}


def _production(db: Database, name: str) -> PromptVersion | None:
    try:
        return resolve(db, f"{name}@{PRODUCTION}", latest=False)
    except NotFound:
        return None


def promote(db: Database, ref: str, principal: Principal, *,
            force: bool = False, reason: str = "",
            gates: Sequence[Gate] = GATES) -> PromptPromotion:
    """Run the gates on the version ``ref`` names and, when they pass (or an admin forces
    it with a reason), point ``production`` at it."""
    authorize(principal, "prompts.promote")
    if force:
        authorize(principal, "admin")
        if not reason.strip():
            raise BadInput("--force needs --reason: say why the gates are overridden")
    parsed = parse_ref(ref, "prompt reference")
    if parsed.version is None and parsed.alias is None:
        raise BadInput(f"promote names one version: {parsed.name}@VERSION")
    pv = resolve(db, ref)
    production = _production(db, pv.name)
    if production is not None and production.id == pv.id:
        raise Conflict(f"{pv.ref} is already production")
    results = [gate(db, pv, production) for gate in gates]
    failed = [r.gate for r in results if not r.passed]
    with immediate(db):
        current = _production(db, pv.name)
        if (current.id if current else None) != (production.id if production else None):
            raise Conflict(f"production of prompt {pv.name} moved while the gates ran; "
                           "promote again")
        if failed and not force:
            audit.append(db, actor=principal.name, action="prompt.promote.refused",
                         target=f"prompt:{pv.ref}",
                         details={"failed": failed, "gates": [r.as_dict() for r in results]})
        else:
            forced = bool(failed)
            audit.append(db, actor=principal.name,
                         action="prompt.promote.forced" if forced else "prompt.promote",
                         target=f"prompt:{pv.ref}",
                         details={"failed": failed, "reason": reason,
                                  "gates": [r.as_dict() for r in results],
                                  "baseline": production.ref if production else None})
            alias_reason = reason or "promoted"
            if alias_reason.startswith(ROLLBACK_PREFIX):  # rollback() alone writes it
                alias_reason = f"promoted: {alias_reason}"
            move = move_alias_in_transaction(db, pv, PRODUCTION, actor=principal.name,
                                             reason=alias_reason)
    if failed and not force:
        raise PromptPromotionRefused(pv.ref, results)
    return PromptPromotion(pv.ref, results, bool(failed), move)


def _rollback_target(db: Database, name: str) -> int | None:
    """Production's history replayed as a stack, as for models: a move pushes the version
    it replaced, a rollback pops one, so rolling back twice walks two promotions back."""
    stack: list[int] = []
    for version_id, previous_id, reason in db.execute(
        "SELECT h.version_id, h.previous_version_id, h.reason FROM prompt_alias_history h"
        " JOIN prompts p ON p.id = h.prompt_id WHERE p.name = ? AND h.alias = ? ORDER BY h.id",
        [name, PRODUCTION],
    ):
        if version_id is None:
            continue
        if str(reason).startswith(ROLLBACK_PREFIX):
            if stack:
                stack.pop()
        elif previous_id is not None:
            stack.append(int(previous_id))
    return stack[-1] if stack else None


def rollback(db: Database, name: str, principal: Principal, *,
             reason: str = "") -> PromptAliasMove:
    """Put back the production version the last production move replaced."""
    authorize(principal, "prompts.rollback")
    with immediate(db):
        current = _production(db, name)
        if current is None:
            raise Conflict(f"prompt {name} has no production version to roll back")
        target = _rollback_target(db, name)
        if target is None:
            raise Conflict(f"{current.ref} is the first production version of prompt {name} "
                           "(or every earlier move was rolled back); there is nothing to roll "
                           "back to")
        previous = get_version_by_id(db, target)
        move = move_alias_in_transaction(
            db, previous, PRODUCTION, actor=principal.name,
            reason=f"{ROLLBACK_PREFIX}{current.ref}" + (f": {reason}" if reason else ""))
        audit.append(db, actor=principal.name, action="prompt.rollback",
                     target=f"prompt:{name}",
                     details={"from": current.version, "to": previous.version,
                              "reason": reason})
    return move
