"""Staged rollout: shadow, then canary, then production, or rolled back.

A rollout is a row per (model, candidate) whose state moves only forward::

    shadow ──▶ canary ──▶ production
       │          │
       └──────────┴──▶ rolled_back        (cancelled: ended by a direct promotion
                                            or a rollback of production)

It drives the registry's ``shadow`` and ``canary`` aliases and the canary
version's ``canary_weight`` tag, which the serving daemon already honours, so
the daemon needs to know nothing about rollouts. ``advance_rollouts`` reads the
request log of monitoring.db since the stage began and compares the candidate
with production on error rate, p99 latency, output agreement (shadow) and,
when labels are recorded, quality; it advances a candidate that is no worse by
the policy's margins once the stage has seen enough requests and time, and
rolls back one that is worse. Every move is an audit entry in the same
transaction as the alias and tag changes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import Conflict, NotFound
from appliance.registry import ModelVersion, get_version_by_id, move_alias_in_transaction
from appliance.registry.versions import _model_id
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

CANARY_WEIGHT_TAG = "canary_weight"


class State(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


ACTIVE = (State.SHADOW, State.CANARY)
SYSTEM_ACTOR = "system:rollout"


@dataclass
class Step:
    """What one tick decided for one rollout."""

    rollout_id: int
    model: str
    candidate: int
    state_before: str
    state_after: str
    decision: str  # "wait", "advance" or "rollback"
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- alias and tag changes inside the caller's transaction -----------------------------

def _remove_alias(db: Database, name: str, alias: str, actor: str,
                  reason: str) -> None:
    model_id = _model_id(db, name)
    row = db.execute("SELECT version_id FROM aliases WHERE model_id = ? AND alias = ?",
                     [model_id, alias]).fetchone()
    if row is None:
        return
    previous = get_version_by_id(db, int(row[0])).version
    db.execute("DELETE FROM aliases WHERE model_id = ? AND alias = ?", [model_id, alias])
    db.execute("INSERT INTO alias_history (model_id, alias, version_id, previous_version_id, at,"
               " actor, reason) VALUES (?, ?, NULL, ?, ?, ?, ?)",
               [model_id, alias, int(row[0]), now_iso(), actor, reason])
    audit.append(db, actor=actor, action="model.alias.remove", target=f"model:{name}",
                 details={"alias": alias, "previous": previous, "reason": reason})


def _set_weight(db: Database, mv: ModelVersion, weight: float | None,
                actor: str) -> None:
    if weight is None:
        db.execute("DELETE FROM model_version_tags WHERE version_id = ? AND key = ?",
                   [mv.id, CANARY_WEIGHT_TAG])
        value = None
    else:
        value = format(weight, "g")
        db.execute("INSERT INTO model_version_tags (version_id, key, value) VALUES (?, ?, ?)"
                   " ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value",
                   [mv.id, CANARY_WEIGHT_TAG, value])
    audit.append(db, actor=actor, action="model.version.tag", target=f"model:{mv.ref}",
                 details={"key": CANARY_WEIGHT_TAG, "value": value})


def _enter_canary(db: Database, mv: ModelVersion, plan: dict[str, Any],
                  actor: str, reason: str) -> None:
    _remove_alias(db, mv.name, "shadow", actor, reason)
    move_alias_in_transaction(db, mv, "canary", actor=actor, reason=reason)
    _set_weight(db, mv, float(plan["canary"]["weight"]), actor)


def _clear(db: Database, mv: ModelVersion, actor: str, reason: str) -> None:
    _remove_alias(db, mv.name, "shadow", actor, reason)
    _remove_alias(db, mv.name, "canary", actor, reason)
    if mv.tags.get(CANARY_WEIGHT_TAG) is not None:
        _set_weight(db, mv, None, actor)


def start_in_transaction(db: Database, mv: ModelVersion, production: ModelVersion,
                         plan: dict[str, Any], *, stage: str, actor: str,
                         now: float | None = None) -> int:
    """Begin a rollout of ``mv`` against ``production`` at ``stage`` (shadow or canary)."""
    if stage not in (State.SHADOW, State.CANARY):
        raise ValueError(f"a rollout starts at shadow or canary, not {stage!r}")
    model_id = _model_id(db, mv.name)
    active = db.execute("SELECT id, candidate_version_id FROM rollouts WHERE model_id = ? AND"
                        " state IN ('shadow', 'canary')", [model_id]).fetchone()
    if active is not None:
        raise Conflict(f"model {mv.name} already has rollout {active[0]} in progress; finish "
                       f"it or roll it back ('appliance models rollout {mv.name}')")
    at = now_iso()
    cur = db.execute(
        "INSERT INTO rollouts (model_id, candidate_version_id, baseline_version_id, state, plan,"
        " stage_started_at, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [model_id, mv.id, production.id, str(stage), json.dumps(plan, sort_keys=True),
         time.time() if now is None else now, at, actor, at])
    rollout_id = int(cur.lastrowid or 0)
    reason = f"rollout {rollout_id}"
    if stage == State.SHADOW:
        move_alias_in_transaction(db, mv, "shadow", actor=actor, reason=reason)
    else:
        _enter_canary(db, mv, plan, actor, reason)
    audit.append(db, actor=actor, action="model.rollout.start", target=f"model:{mv.ref}",
                 details={"rollout": rollout_id, "stage": str(stage),
                          "baseline": production.version})
    return rollout_id


def end_active_in_transaction(db: Database, name: str, *, actor: str,
                              reason: str) -> int | None:
    """Cancel the model's rollout in progress, if any (a direct promotion or a rollback
    supersedes it); its shadow and canary aliases go with it."""
    model_id = _model_id(db, name)
    row = db.execute("SELECT id, candidate_version_id FROM rollouts WHERE model_id = ? AND"
                     " state IN ('shadow', 'canary')", [model_id]).fetchone()
    if row is None:
        return None
    cand = get_version_by_id(db, int(row[1]))
    _clear(db, cand, actor, reason)
    _finish(db, int(row[0]), State.CANCELLED, reason)
    audit.append(db, actor=actor, action="model.rollout.cancel", target=f"model:{cand.ref}",
                 details={"rollout": int(row[0]), "reason": reason})
    return int(row[0])


def _finish(db: Database, rollout_id: int, state: State, reason: str,
            check: dict[str, Any] | None = None) -> None:
    at = now_iso()
    db.execute("UPDATE rollouts SET state = ?, updated_at = ?, ended_at = ?, reason = ?,"
               " last_check = COALESCE(?, last_check) WHERE id = ?",
               [str(state), at, at, reason, json.dumps(check) if check else None, rollout_id])


# ---- reading the request log -------------------------------------------------------------

def _p99(latencies: list[int]) -> float | None:
    if not latencies:
        return None
    values = sorted(latencies)
    return values[min(len(values) - 1, max(0, math.ceil(0.99 * len(values)) - 1))] / 1000.0


def _side(mdb: Database, name: str, version: int, routes: tuple[str, ...],
          since: float, until: float) -> dict[str, Any]:
    marks = ",".join("?" for _ in routes)
    rows = mdb.execute(
        f"SELECT status, latency_us FROM requests WHERE model = ? AND version = ? AND"
        f" route IN ({marks}) AND ts >= ? AND ts <= ?",
        [name, version, *routes, since, until]).fetchall()
    errors = sum(1 for status, _ in rows if status >= 500)
    ok_latency = [int(lat) for status, lat in rows if status < 400]
    return {"requests": len(rows), "errors": errors,
            "error_rate": errors / len(rows) if rows else 0.0, "p99_ms": _p99(ok_latency)}


def _agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if "label" in a and "label" in b:
        return bool(a["label"] == b["label"])
    common = set(a) & set(b)
    if not common:
        return False
    import numpy as np  # here, so reading a rollout's state does not load it

    try:
        return all(np.allclose(np.asarray(a[k], dtype=np.float64),
                               np.asarray(b[k], dtype=np.float64), rtol=0.05, atol=1e-3)
                   for k in common)
    except (ValueError, TypeError):
        return all(a[k] == b[k] for k in common)


def _agreement(mdb: Database, name: str, cand: int, base: int, since: float,
               until: float) -> tuple[int, float | None]:
    """Share of shadowed requests whose candidate outputs match production's."""
    pairs = mdb.execute(
        "SELECT s.outputs, p.outputs FROM requests s JOIN requests p"
        " ON p.request_id = s.request_id AND p.model = s.model AND p.version = ?"
        " AND p.route = 'primary' WHERE s.model = ? AND s.version = ? AND s.route = 'shadow'"
        " AND s.ts >= ? AND s.ts <= ? AND s.outputs IS NOT NULL AND p.outputs IS NOT NULL",
        [base, name, cand, since, until]).fetchall()
    if not pairs:
        return 0, None
    same = sum(1 for x, y in pairs if _agree(json.loads(x), json.loads(y)))
    return len(pairs), same / len(pairs)


def labelled_quality(mdb: Database, name: str, version: int, since: float,
                     until: float, classes: list[Any] | None = None) -> float | None:
    """Accuracy of ``version``'s answers against delayed labels, or None without labels.

    Each label (``feedback``: model, request id, row) is scored once, against the latest
    answered request of that id by this version in the window (shadow copies included, as
    that is how a candidate answers in the shadow stage), at the label's row. A classifier
    logs the class index; it is compared with the label by the class's name.
    """
    rows = mdb.execute(
        "SELECT r.outputs, f.label, f.row FROM feedback f JOIN requests r ON r.id = ("
        " SELECT a.id FROM requests a WHERE a.model = f.model AND a.request_id = f.request_id"
        " AND a.version = ? AND a.status < 400 AND a.ts >= ? AND a.ts <= ?"
        " AND a.outputs IS NOT NULL ORDER BY a.ts DESC, a.id DESC LIMIT 1)"
        " WHERE f.model = ?", [version, since, until, name]).fetchall()
    scored = []
    for outputs, label, row in rows:
        out = json.loads(outputs)
        answers = out.get("label", out.get("prediction"))
        if not isinstance(answers, list) or row >= len(answers):
            continue
        answer = answers[row]
        while isinstance(answer, list) and answer:
            answer = answer[0]
        if classes and isinstance(answer, int | float) and 0 <= int(answer) < len(classes):
            answer = classes[int(answer)]
        scored.append(str(answer) == str(label))
    return sum(scored) / len(scored) if scored else None


# ---- deciding ----------------------------------------------------------------------------

def _judge(plan: dict[str, Any], state: str, cand: dict[str, Any], base: dict[str, Any],
           elapsed_min: float, agreement: float | None, q_cand: float | None,
           q_base: float | None) -> tuple[str, list[str]]:
    stage = plan[state]
    margins = plan["margins"]
    need = int(stage["min_requests"])
    n = cand["requests"]
    limit_rate = base["error_rate"] + margins["error_rate"]
    # Worse beyond doubt: even if every request still to come succeeded, the stage
    # would end above the error-rate limit.
    if cand["errors"] > limit_rate * max(n, need):
        return "rollback", [f"error rate {cand['error_rate']:.3f} over {n} requests > "
                            f"production {base['error_rate']:.3f} + {margins['error_rate']}"]
    if n < need or elapsed_min < float(stage["min_minutes"]):
        return "wait", [f"{n}/{need} requests, {elapsed_min:.1f}/{stage['min_minutes']} min"]
    worse = []
    if cand["error_rate"] > limit_rate:
        worse.append(f"error rate {cand['error_rate']:.3f} > {limit_rate:.3f}")
    if (cand["p99_ms"] is not None and base["p99_ms"] is not None
            and cand["p99_ms"] > base["p99_ms"] * margins["p99_latency_ratio"]):
        worse.append(f"p99 {cand['p99_ms']:.2f} ms > {margins['p99_latency_ratio']} x "
                     f"production {base['p99_ms']:.2f} ms")
    if state == State.SHADOW and agreement is not None and agreement < stage["min_agreement"]:
        worse.append(f"output agreement {agreement:.3f} < {stage['min_agreement']}")
    if q_cand is not None and q_base is not None and q_cand < q_base - margins["quality"]:
        worse.append(f"labelled accuracy {q_cand:.3f} < production {q_base:.3f} - "
                     f"{margins['quality']}")
    if worse:
        return "rollback", worse
    return "advance", [f"no worse than production over {n} requests"]


def _tick(db: Database, mdb: Database, row: dict[str, Any],
          now: float) -> Step:
    plan = json.loads(row["plan"])
    cand = get_version_by_id(db, row["candidate_version_id"])
    base = get_version_by_id(db, row["baseline_version_id"])
    state = row["state"]
    since = float(row["stage_started_at"])
    cand_route = ("shadow",) if state == State.SHADOW else ("canary",)
    c = _side(mdb, cand.name, cand.version, cand_route, since, now)
    b = _side(mdb, base.name, base.version, ("primary",), since, now)
    pairs, agreement = (_agreement(mdb, cand.name, cand.version, base.version, since, now)
                        if state == State.SHADOW else (0, None))
    q_c = labelled_quality(mdb, cand.name, cand.version, since, now,
                           cand.signature.get("classes"))
    q_b = labelled_quality(mdb, base.name, base.version, since, now,
                           base.signature.get("classes"))
    decision, reasons = _judge(plan, state, c, b, (now - since) / 60.0, agreement, q_c, q_b)
    stats = {"candidate": c, "production": b, "agreement": agreement, "pairs": pairs,
             "quality": {"candidate": q_c, "production": q_b}}
    return Step(row["id"], cand.name, cand.version, state, state, decision, reasons, stats)


def _apply(db: Database, step: Step, row: dict[str, Any], now: float,
           actor: str) -> None:
    """Carry out ``step``'s decision, re-checking in the transaction that the rollout is
    still where the tick found it."""
    current = db.execute("SELECT state FROM rollouts WHERE id = ?", [step.rollout_id]).fetchone()
    if current is None or current[0] != step.state_before:
        step.decision, step.reasons = "wait", ["the rollout moved meanwhile"]
        return
    plan = json.loads(row["plan"])
    cand = get_version_by_id(db, row["candidate_version_id"])
    reason = f"rollout {step.rollout_id}: " + "; ".join(step.reasons)
    check = {"decision": step.decision, "reasons": step.reasons, "stats": step.stats}
    if step.decision == "rollback":
        _clear(db, cand, actor, reason)
        _finish(db, step.rollout_id, State.ROLLED_BACK, "; ".join(step.reasons), check)
        step.state_after = State.ROLLED_BACK
        action = "model.rollout.rollback"
    elif step.state_before == State.SHADOW:
        _enter_canary(db, cand, plan, actor, reason)
        db.execute("UPDATE rollouts SET state = ?, stage_started_at = ?, updated_at = ?,"
                   " last_check = ? WHERE id = ?",
                   [str(State.CANARY), now, now_iso(), json.dumps(check), step.rollout_id])
        step.state_after = State.CANARY
        action = "model.rollout.advance"
    else:
        move_alias_in_transaction(db, cand, "production", actor=actor, reason=reason)
        _clear(db, cand, actor, reason)
        _finish(db, step.rollout_id, State.PRODUCTION, "; ".join(step.reasons), check)
        step.state_after = State.PRODUCTION
        action = "model.rollout.advance"
    audit.append(db, actor=actor, action=action, target=f"model:{cand.ref}",
                 details={"rollout": step.rollout_id, "from": step.state_before,
                          "to": str(step.state_after), "reasons": step.reasons,
                          "stats": step.stats})


def advance_rollouts(home: Home, *, now: float | None = None, name: str | None = None,
                     actor: str = SYSTEM_ACTOR) -> list[Step]:
    """One tick of every rollout in progress (or only model ``name``'s): advance, roll back
    or wait, as the request log since the stage began says."""
    now = time.time() if now is None else now
    db = home.db()
    mdb = home.monitoring_db()
    steps: list[Step] = []
    try:
        sql = ("SELECT r.* FROM rollouts r JOIN models m ON m.id = r.model_id"
               " WHERE r.state IN ('shadow', 'canary')")
        params: list[Any] = []
        if name is not None:
            _model_id(db, name)
            sql += " AND m.name = ?"
            params.append(name)
        for row in list(db.query(sql + " ORDER BY r.id", params)):
            step = _tick(db, mdb, row, now)
            if step.decision == "wait":
                db.execute("UPDATE rollouts SET last_check = ? WHERE id = ?",
                           [json.dumps({"decision": "wait", "reasons": step.reasons,
                                        "stats": step.stats}), step.rollout_id])
            else:
                with immediate(db):
                    _apply(db, step, row, now, actor)
            steps.append(step)
    finally:
        mdb.close()
        db.close()
    return steps


def rollout_status(db: Database, name: str) -> list[dict[str, Any]]:
    """The model's rollouts, newest first, with their last check."""
    model_id = _model_id(db, name)
    rows = list(db.query(
        "SELECT r.id, r.state, c.version AS candidate, b.version AS baseline, r.plan,"
        " r.stage_started_at, r.created_at, r.created_by, r.updated_at, r.ended_at,"
        " r.last_check, r.reason FROM rollouts r"
        " JOIN model_versions c ON c.id = r.candidate_version_id"
        " LEFT JOIN model_versions b ON b.id = r.baseline_version_id"
        " WHERE r.model_id = ? ORDER BY r.id DESC", [model_id]))
    for r in rows:
        r["plan"] = json.loads(r["plan"])
        r["last_check"] = json.loads(r["last_check"])
    return rows


def abort_rollout(home: Home, name: str, *, actor: str, reason: str) -> int:
    """Roll back the model's rollout in progress by hand."""
    with home.db() as db:
        with immediate(db):
            model_id = _model_id(db, name)
            row = db.execute("SELECT id, candidate_version_id FROM rollouts WHERE model_id = ?"
                             " AND state IN ('shadow', 'canary')", [model_id]).fetchone()
            if row is None:
                raise NotFound(f"model {name} has no rollout in progress")
            cand = get_version_by_id(db, int(row[1]))
            _clear(db, cand, actor, reason)
            _finish(db, int(row[0]), State.ROLLED_BACK, reason)
            audit.append(db, actor=actor, action="model.rollout.rollback",
                         target=f"model:{cand.ref}",
                         details={"rollout": int(row[0]), "reasons": [reason], "manual": True})
        return int(row[0])
