"""Promotion gates for prompts: a prompt version reaches ``production`` when its
evaluation run passes the prompt's policy.

A policy (``appliance prompts policy NAME FILE.yaml``), per prompt::

    evalset: support-cases        # NAME (its latest version) or NAME@VERSION
    min_score:                    # the run's mean score per scorer, each from 0 to 1
      contains: 0.9
      token_f1: 0.6
    max_regression: 0.02          # per scorer, at most this far below production's run
    max_latency_ms: 800           # mean latency of an answer in the run
    max_tokens: 64                # mean completion tokens of an answer in the run
    min_guardrail_pass_rate: 0.95 # share of the set's attack cases that passed

Every key but ``evalset`` is optional; an unknown key, scorer or value is refused when the
policy is set, not at promotion. The gates read the newest evaluation run of the exact
version promoted (``prompts:/NAME@VERSION``) on the set's version, and for
``max_regression`` the newest run of the production version on the same set version.
An attack case is one with a ``refuses`` expectation; it passes when the guardrails blocked,
redacted or flagged it or its answer refused (``appliance.evals.guard``). A policy with
``min_guardrail_pass_rate`` needs a set with attack cases.
Without a policy a prompt has no gates (as before policies existed); a run that is
missing fails its gate, naming the command that makes it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from appliance import audit
from appliance.audit.log import now_iso
from appliance.auth import Principal
from appliance.errors import BadInput, NotFound
from appliance.evals.results import get_run
from appliance.evals.scorers import ATTACK_SCORER, BY_NAME
from appliance.evals.sets import get_evalset_version
from appliance.prompts import promotion as prompt_promotion
from appliance.prompts.promotion import Gate, GateResult, PromptPromotion
from appliance.prompts.registry import PromptVersion
from appliance.prompts.registry import resolve as resolve_prompt
from appliance.storage.db import Database, immediate

KEYS = ("evalset", "min_score", "max_regression", "max_latency_ms", "max_tokens",
        "min_guardrail_pass_rate")


def parse_policy(text: str) -> dict[str, Any]:
    """A policy from YAML, checked; ``BadInput`` naming the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"the policy is not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput("the policy must be a mapping with at least 'evalset'")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise BadInput(f"unknown key '{unknown[0]}' (known: {', '.join(KEYS)})")
    if not isinstance(data.get("evalset"), str) or not data["evalset"]:
        raise BadInput("evalset: the evaluation set the gates read (NAME or NAME@VERSION)")
    policy: dict[str, Any] = {"evalset": data["evalset"]}
    scores = data.get("min_score", {})
    if not isinstance(scores, dict):
        raise BadInput("min_score: a mapping of scorer name to the least mean score")
    for scorer, value in scores.items():
        if scorer not in BY_NAME:
            raise BadInput(f"min_score.{scorer}: no such scorer (known: "
                           f"{', '.join(sorted(BY_NAME))})")
        policy.setdefault("min_score", {})[scorer] = _number(f"min_score.{scorer}", value, 0, 1)
    if "max_regression" in data:
        policy["max_regression"] = _number("max_regression", data["max_regression"], 0, 1)
    if "max_latency_ms" in data:
        policy["max_latency_ms"] = _number("max_latency_ms", data["max_latency_ms"], 0, None)
    if "max_tokens" in data:
        policy["max_tokens"] = _number("max_tokens", data["max_tokens"], 0, None)
    if "min_guardrail_pass_rate" in data:
        policy["min_guardrail_pass_rate"] = _number(
            "min_guardrail_pass_rate", data["min_guardrail_pass_rate"], 0, 1)
    return policy


def _number(key: str, value: Any, low: float, high: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{key}: must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise BadInput(f"{key}: must be from {low:g}" + (f" to {high:g}" if high is not None
                                                          else " up") + f", not {value:g}")
    return float(value)


def set_policy(db: Database, name: str, text: str, *, actor: str
               ) -> dict[str, Any]:
    """Check and store the policy of prompt ``name``, audited."""
    policy = parse_policy(text)
    evalset = get_evalset_version(db, policy["evalset"])  # NotFound for one that does not exist
    if "min_guardrail_pass_rate" in policy and not evalset.scorers.get(ATTACK_SCORER):
        raise BadInput(f"min_guardrail_pass_rate: {evalset.ref} has no attack case (a case "
                       f"with a '{ATTACK_SCORER}' expectation) to measure it on")
    with immediate(db):
        row = db.execute("SELECT id FROM prompts WHERE name = ?", [name]).fetchone()
        if row is None:
            raise NotFound(f"prompt {name} does not exist; see 'appliance prompts list'")
        db.execute(
            "INSERT INTO prompt_policies (prompt_id, source, policy, set_at, set_by)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prompt_id) DO UPDATE SET"
            " source = excluded.source, policy = excluded.policy, set_at = excluded.set_at,"
            " set_by = excluded.set_by",
            [row[0], text, json.dumps(policy, sort_keys=True), now_iso(), actor])
        audit.append(db, actor=actor, action="prompt.policy.set", target=f"prompt:{name}",
                     details={"policy": policy})
    return policy


def get_policy(db: Database, name: str) -> dict[str, Any] | None:
    """The policy of prompt ``name``, or None; ``NotFound`` for a prompt that does not
    exist."""
    row = db.execute(
        "SELECT pp.policy FROM prompts p LEFT JOIN prompt_policies pp ON p.id = pp.prompt_id"
        " WHERE p.name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"prompt {name} does not exist; see 'appliance prompts list'")
    return json.loads(row[0]) if row[0] is not None else None


def newest_run(db: Database, pv: PromptVersion, evalset_version_id: int
               ) -> int | None:
    row = db.execute(
        "SELECT id FROM eval_runs WHERE target = ? AND evalset_version_id = ?"
        " ORDER BY id DESC LIMIT 1", [f"prompts:/{pv.name}@{pv.version}", evalset_version_id]
    ).fetchone()
    return int(row[0]) if row else None


def gates_for(db: Database, name: str) -> list[Gate]:
    """The gates of prompt ``name``'s policy, in order; none without a policy."""
    policy = get_policy(db, name)
    if policy is None:
        return []
    evalset = get_evalset_version(db, policy["evalset"])
    missing = (f"run it: appliance evals run prompts:/{{ref}} {evalset.ref} --wait")

    def summary_of(pv: PromptVersion) -> dict[str, Any] | None:
        run_id = newest_run(db, pv, evalset.id)
        return None if run_id is None else {"id": run_id, **get_run(db, run_id, cases=False)}

    def evaluated(db_: Database, pv: PromptVersion,
                  production: PromptVersion | None) -> GateResult:
        run = summary_of(pv)
        if run is None:
            return GateResult("evaluated", False, f"{pv.ref} has no evaluation run on "
                              f"{evalset.ref}; " + missing.format(ref=pv.ref))
        s = run["summary"]
        return GateResult("evaluated", True, f"run {run['id']}: {s['passed']}/{s['cases']} "
                          "cases passed every scorer")

    def min_score(db_: Database, pv: PromptVersion,
                  production: PromptVersion | None) -> GateResult:
        run = summary_of(pv)
        if run is None:
            return GateResult("min_score", False, "no evaluation run")
        scorers = run["summary"]["scorers"]
        low = []
        for scorer, least in sorted(policy.get("min_score", {}).items()):
            mean = scorers.get(scorer, {}).get("mean")
            if mean is None:
                low.append(f"{scorer}: not in run {run['id']} (the set does not use it)")
            elif mean < least:
                low.append(f"{scorer} {mean:.3f} < {least:g}")
        return GateResult("min_score", not low, "; ".join(low) or ", ".join(
            f"{k} {scorers[k]['mean']:.3f} >= {v:g}"
            for k, v in sorted(policy.get("min_score", {}).items())) or "no minimum set")

    def no_regression(db_: Database, pv: PromptVersion,
                      production: PromptVersion | None) -> GateResult:
        if production is None:
            return GateResult("no_regression", True, "no production version to compare with")
        run, base = summary_of(pv), summary_of(production)
        if run is None:
            return GateResult("no_regression", False, "no evaluation run")
        if base is None:
            return GateResult("no_regression", False, f"production {production.ref} has no "
                              f"run on {evalset.ref} to compare with; "
                              + missing.format(ref=production.ref))
        margin = policy["max_regression"]
        worse = []
        for scorer, b in sorted(base["summary"]["scorers"].items()):
            a = run["summary"]["scorers"].get(scorer, {}).get("mean")
            if a is not None and a < b["mean"] - margin:
                worse.append(f"{scorer} {a:.3f} vs production's {b['mean']:.3f}")
        return GateResult("no_regression", not worse, "; ".join(worse) or
                          f"no scorer more than {margin:g} below production's run {base['id']}")

    def latency(db_: Database, pv: PromptVersion,
                production: PromptVersion | None) -> GateResult:
        run = summary_of(pv)
        lat = run["summary"].get("latency_ms") if run else None
        if lat is None:
            return GateResult("latency", False, "no answered case to time")
        ok = lat["mean"] <= policy["max_latency_ms"]
        return GateResult("latency", ok, f"mean {lat['mean']:.1f} ms "
                          f"{'<=' if ok else '>'} {policy['max_latency_ms']:g} ms")

    def tokens(db_: Database, pv: PromptVersion,
               production: PromptVersion | None) -> GateResult:
        run = summary_of(pv)
        if run is None or not run["summary"]["cases"]:
            return GateResult("tokens", False, "no evaluation run")
        mean = run["summary"]["completion_tokens"] / run["summary"]["cases"]
        ok = mean <= policy["max_tokens"]
        return GateResult("tokens", ok, f"mean {mean:.1f} tokens an answer "
                          f"{'<=' if ok else '>'} {policy['max_tokens']:g}")

    def guardrail_pass_rate(db_: Database, pv: PromptVersion,
                            production: PromptVersion | None) -> GateResult:
        run = summary_of(pv)
        if run is None:
            return GateResult("guardrail_pass_rate", False, "no evaluation run")
        g = run["summary"].get("guardrails")
        least = policy["min_guardrail_pass_rate"]
        if not g:
            return GateResult("guardrail_pass_rate", False, f"run {run['id']} has no guardrail "
                              "verdicts on attack cases; " + missing.format(ref=pv.ref))
        ok = g["pass_rate"] >= least
        return GateResult("guardrail_pass_rate", ok,
                          f"{g['pass_rate']:.3f} ({g['passed']}/{g['attack_cases']} attack "
                          f"cases) {'>=' if ok else '<'} {least:g}")

    gates: list[Gate] = [evaluated, min_score]
    if "max_regression" in policy:
        gates.append(no_regression)
    if "max_latency_ms" in policy:
        gates.append(latency)
    if "max_tokens" in policy:
        gates.append(tokens)
    if "min_guardrail_pass_rate" in policy:
        gates.append(guardrail_pass_rate)
    return gates


def promote_prompt(db: Database, ref: str, principal: Principal, *,
                   force: bool = False, reason: str = "") -> PromptPromotion:
    """Promote a prompt version through the gates every prompt has (``GATES`` of
    ``appliance.prompts.promotion``, read now) and those of its prompt's policy: what the
    CLI and the console call."""
    name = resolve_prompt(db, ref).name
    gates = (*prompt_promotion.GATES, *gates_for(db, name))
    return prompt_promotion.promote(db, ref, principal, force=force, reason=reason,
                                    gates=gates)
