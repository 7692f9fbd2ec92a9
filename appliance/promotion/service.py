"""Promote, approve and roll back: the governed ways a version reaches production and leaves.

Each function authorises its principal, does its checks, and makes its change
in one transaction with the audit entries that record it: the alias move, the
stored gate report, the model signature. A refused promotion stores its
report too, so the record shows what was tried and why it failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.auth import Principal, authorize, check_separation_of_duties
from appliance.config import Config, parse_config
from appliance.errors import BadInput, Conflict, NotFound, OperationFailed
from appliance.promotion import rollout as rollouts
from appliance.promotion.gates import GateReport, run_gates
from appliance.promotion.policy import get_policy
from appliance.promotion.records import list_approvals
from appliance.registry import (
    AliasMove,
    ModelVersion,
    get_version_by_id,
    move_alias_in_transaction,
    parse_ref,
    resolve,
)
from appliance.registry.signing import sign_in_transaction
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home
from appliance.training.runs import get_run

PRODUCTION = "production"
TARGETS = ("production", "shadow", "canary")


class PromotionRefused(OperationFailed):
    """A gate failed; ``report`` holds every gate's result."""

    def __init__(self, report: GateReport) -> None:
        super().__init__(f"{report.ref} was not promoted: gate(s) failed: "
                         + ", ".join(report.failed))
        self.report = report


@dataclass
class PromotionResult:
    ref: str
    target: str
    report: GateReport
    forced: bool
    move: AliasMove | None
    rollout_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "target": self.target, "forced": self.forced,
                "report": self.report.as_dict(),
                "move": self.move.as_dict() if self.move else None,
                "rollout_id": self.rollout_id}


def _production(db: Database, name: str) -> ModelVersion | None:
    try:
        return resolve(db, f"{name}@{PRODUCTION}")
    except NotFound:
        return None


def trained_by(db: Database, mv: ModelVersion) -> set[str]:
    """Everyone who made this version: who registered it and who started its run."""
    names = {mv.created_by}
    if mv.run_id is not None:
        names.add(get_run(db, mv.run_id).actor)
    return {n for n in names if n}


def approve(home: Home, ref: str, principal: Principal, *, comment: str = "") -> dict[str, Any]:
    """Record ``principal``'s approval of a version's promotion.

    Needs the ``models.approve`` permission (approver or admin), and the
    approver must not be anyone who trained or registered the version.
    """
    authorize(principal, "models.approve")
    with home.db() as db:
        with immediate(db):
            mv = resolve(db, ref)
            for name in sorted(trained_by(db, mv)):
                check_separation_of_duties(name, principal)
            if db.execute("SELECT 1 FROM approvals WHERE version_id = ? AND approver = ?",
                          [mv.id, principal.name]).fetchone():
                raise Conflict(f"{principal.name} has already approved {mv.ref}")
            now = now_iso()
            db.execute("INSERT INTO approvals (version_id, approver, role, comment, created_at)"
                       " VALUES (?, ?, ?, ?, ?)",
                       [mv.id, principal.name, principal.role.value, comment, now])
            audit.append(db, actor=principal.name, action="model.version.approve",
                         target=f"model:{mv.ref}",
                         details={"role": principal.role.value, "comment": comment})
        return {"ref": mv.ref, "approver": principal.name, "role": principal.role.value,
                "comment": comment, "at": now}


def evaluate_gates(home: Home, ref: str, *, target: str = PRODUCTION,
                   breaking_change: bool = False, config: Config | None = None) -> GateReport:
    """Run the gates without promoting (a dry run, for the console and for CI)."""
    config = config or parse_config({})
    with home.db() as db:
        mv = resolve(db, ref)
        return run_gates(home, db, mv, _production(db, mv.name), get_policy(db, mv.name),
                         config, target=target, breaking_change=breaking_change,
                         approvals=list_approvals(db, mv))


def _store_report(db: Database, mv: ModelVersion, report: GateReport, *,
                  actor: str, forced: bool, reason: str) -> int:
    baseline = resolve(db, report.baseline).id if report.baseline else None
    cur = db.execute(
        "INSERT INTO gate_reports (version_id, target, baseline_version_id, passed, forced,"
        " reason, gates, created_at, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [mv.id, report.target, baseline, int(report.passed), int(forced), reason,
         json.dumps(report.as_dict(), sort_keys=True), now_iso(), actor])
    return int(cur.lastrowid or 0)


def promote(home: Home, ref: str, principal: Principal, *, to: str = PRODUCTION,
            force: bool = False, reason: str = "", breaking_change: bool = False,
            config: Config | None = None) -> PromotionResult:
    """Run the gates and, when they pass (or an admin forces it with a reason), sign the
    version and move ``to``: ``production`` directly, or ``shadow``/``canary`` to start a
    staged rollout that ``advance_rollouts`` carries on.

    Raises ``PromotionRefused`` (exit 1) naming the failed gates; the report is stored
    either way.
    """
    if to not in TARGETS:
        raise BadInput(f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    authorize(principal, "models.promote")
    if force:
        authorize(principal, "admin")
        if not reason.strip():
            raise BadInput("--force needs --reason: say why the gates are overridden")
    config = config or parse_config({})
    with home.db() as db:
        mv = resolve(db, ref)
        if parse_ref(ref).version is None and parse_ref(ref).alias is None:
            raise BadInput(f"promote names one version: {mv.name}@VERSION")
        production = _production(db, mv.name)
        if mv.signature.get("kind") == "llm" and to != PRODUCTION:
            raise BadInput(f"{mv.ref} is a language model: it is promoted to production "
                           "directly (staged rollouts compare tabular predictions)")
        if production is not None and production.id == mv.id:
            raise Conflict(f"{mv.ref} is already production")
        policy = get_policy(db, mv.name)
        report = run_gates(home, db, mv, production, policy, config, target=to,
                           breaking_change=breaking_change, approvals=list_approvals(db, mv))
        data = home.blobs.read_bytes(mv.onnx_digest, verify=True)
        forced = not report.passed and force
        move: AliasMove | None = None
        rollout_id: int | None = None
        with immediate(db):
            current = _production(db, mv.name)
            if (current.id if current else None) != (production.id if production else None):
                raise Conflict(f"production of {mv.name} moved while the gates ran; "
                               "promote again")
            report_id = _store_report(db, mv, report, actor=principal.name, forced=forced,
                                      reason=reason)
            if not report.passed and not force:
                audit.append(db, actor=principal.name, action="model.promote.refused",
                             target=f"model:{mv.ref}",
                             details={"to": to, "failed": report.failed, "report": report_id})
            else:
                if to != PRODUCTION and production is None:
                    raise Conflict(f"{mv.name} has no production version to roll out "
                                   f"against; promote {mv.ref} --to production")
                sign_in_transaction(db, home.keys_dir, mv, data, actor=principal.name)
                audit.append(db, actor=principal.name,
                             action="model.promote.forced" if forced else "model.promote",
                             target=f"model:{mv.ref}",
                             details={"to": to, "report": report_id, "failed": report.failed,
                                      "reason": reason, "baseline": report.baseline})
                if to == PRODUCTION:
                    rollouts.end_active_in_transaction(db, mv.name, actor=principal.name,
                                                       reason=f"{mv.ref} promoted directly")
                    alias_reason = reason or f"promoted, gate report {report_id}"
                    if alias_reason.startswith(ROLLBACK_PREFIX):  # rollback() alone writes it
                        alias_reason = f"promoted: {alias_reason}"
                    move = move_alias_in_transaction(
                        db, mv, PRODUCTION, actor=principal.name, reason=alias_reason)
                elif production is not None:
                    rollout_id = rollouts.start_in_transaction(
                        db, mv, production, policy["rollout"], stage=to, actor=principal.name)
        if not report.passed and not force:
            raise PromotionRefused(report)
        return PromotionResult(mv.ref, to, report, forced, move, rollout_id)


ROLLBACK_PREFIX = "rollback of "


def _rollback_target(db: Database, name: str) -> int | None:
    """Replay production's history as a stack: a move pushes the version it replaced, a
    rollback pops one; the top is the version a rollback puts back. So rolling back
    twice walks two promotions back rather than undoing the first rollback."""
    stack: list[int] = []
    for h in db.execute(
        "SELECT h.version_id, h.previous_version_id, h.reason FROM alias_history h"
        " JOIN models m ON m.id = h.model_id WHERE m.name = ? AND h.alias = ? ORDER BY h.id",
        [name, PRODUCTION],
    ):
        version_id, previous_id, reason = h
        if version_id is None:
            continue
        if str(reason).startswith(ROLLBACK_PREFIX):
            if stack:
                stack.pop()
        elif previous_id is not None:
            stack.append(int(previous_id))
    return stack[-1] if stack else None


def rollback(home: Home, name: str, principal: Principal, *, reason: str = "") -> AliasMove:
    """Put back the production version the last production move replaced.

    One transaction: the alias move, the end of any rollout in progress (its
    canary and shadow aliases removed) and the audit entries. The serving
    daemon notices the move at its next poll and swaps without dropping requests.
    """
    authorize(principal, "models.rollback")
    with home.db() as db:
        with immediate(db):
            current = _production(db, name)
            if current is None:
                raise Conflict(f"model {name} has no production version to roll back")
            target = _rollback_target(db, name)
            if target is None:
                raise Conflict(f"{current.ref} is the first production version of {name} (or "
                               "every earlier move was rolled back); there is nothing to roll "
                               "back to")
            previous = get_version_by_id(db, target)
            rollouts.end_active_in_transaction(db, name, actor=principal.name,
                                               reason=f"rollback of {current.ref}")
            move = move_alias_in_transaction(
                db, previous, PRODUCTION, actor=principal.name,
                reason=f"{ROLLBACK_PREFIX}{current.ref}" + (f": {reason}" if reason else ""))
            audit.append(db, actor=principal.name, action="model.rollback",
                         target=f"model:{name}",
                         details={"from": current.version, "to": previous.version,
                                  "reason": reason})
        return move
