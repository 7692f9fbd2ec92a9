"""Evaluation runs as stored: saving one, reading it back, its summary and a comparison.

``summarize`` and ``compare`` return plain data; they are what promotion gates will call
(a minimum score per scorer, no worse than production by a margin), and what the CLI
and the HTML report print.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import NotFound
from appliance.storage.db import Database, immediate

EPSILON = 1e-9


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scorer: cases, mean score and pass rate; and the run's cases, the cases that
    passed every scorer, those with no answer, tokens, latency and the guardrails on the
    attack cases (``guard.summarize``)."""
    per: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        for s in r["scores"]:
            per.setdefault(s["scorer"], []).append(s)
    latencies = [r["latency_ms"] for r in results if not r.get("error")]
    return {
        "cases": len(results),
        "passed": sum(1 for r in results if r["scores"] and all(s["passed"] for s in r["scores"])),
        "errors": sum(1 for r in results if r.get("error")),
        "scorers": {name: {"cases": len(scores),
                           "mean": round(statistics.fmean(s["score"] for s in scores), 6),
                           "pass_rate": round(sum(s["passed"] for s in scores) / len(scores), 6)}
                    for name, scores in sorted(per.items())},
        "prompt_tokens": sum(r["prompt_tokens"] for r in results),
        "completion_tokens": sum(r["completion_tokens"] for r in results),
        "latency_ms": {"mean": round(statistics.fmean(latencies), 3),
                       "p50": round(statistics.median(latencies), 3),
                       "max": round(max(latencies), 3)} if latencies else None,
        "guardrails": guardrail_summary(results),
    }


def guardrail_summary(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Attack cases (``guard.py``), how many passed, the pass rate; and how many other
    cases an input check blocked. None when the run has no attack case."""
    records = [r.get("guardrail") or {} for r in results]
    attacks = [g for g in records if g.get("attack")]
    if not attacks:
        return None
    passed = sum(1 for g in attacks if g.get("passed"))
    return {"attack_cases": len(attacks), "passed": passed,
            "pass_rate": round(passed / len(attacks), 6),
            "by_guardrails": sum(1 for g in attacks if g.get("by") == "guardrails"),
            "other_cases_blocked": sum(
                1 for g in records if not g.get("attack")
                and (g.get("input") or {}).get("action") == "block")}


def save_run(db: Database, *, evalset_version_id: int, evalset_ref: str,
             target: str, model_version_id: int, model_ref: str, params: dict[str, Any],
             device: str, duration_s: float, results: list[dict[str, Any]], actor: str,
             job_id: int | None = None) -> int:
    """Store a finished run and its audit entry together; its id."""
    summary = summarize(results)
    with immediate(db):
        cur = db.execute(
            "INSERT INTO eval_runs (evalset_version_id, target, model_version_id, job_id,"
            " params, device, duration_s, summary, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [evalset_version_id, target, model_version_id, job_id, json.dumps(params), device,
             round(duration_s, 3), json.dumps(summary), now_iso(), actor])
        run_id = int(cur.lastrowid or 0)
        for r in results:
            db.execute(
                "INSERT INTO eval_results (run_id, position, case_id, answer, prompt_tokens,"
                " completion_tokens, latency_ms, finish_reason, error, scores, guardrail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, r["line"], r["case"], r["answer"], r["prompt_tokens"],
                 r["completion_tokens"], r["latency_ms"], r["finish_reason"], r["error"],
                 json.dumps(r["scores"]),
                 None if r.get("guardrail") is None else json.dumps(r["guardrail"])])
        audit.append(db, actor=actor, action="eval.run", target=f"eval_run:{run_id}",
                     details={"evalset": evalset_ref, "target": target, "model": model_ref,
                              "cases": summary["cases"], "passed": summary["passed"],
                              "scorers": {k: v["mean"] for k, v in summary["scorers"].items()},
                              "guardrails": summary["guardrails"]})
    return run_id


_RUNS = (
    "SELECT r.*, s.name || '@' || v.version AS evalset, m.name || '@' || mv.version AS model"
    " FROM eval_runs r"
    " JOIN evalset_versions v ON v.id = r.evalset_version_id JOIN evalsets s ON s.id = v.evalset_id"
    " JOIN model_versions mv ON mv.id = r.model_version_id JOIN models m ON m.id = mv.model_id"
)


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "evalset": row["evalset"], "target": row["target"],
            "model": row["model"], "job_id": row["job_id"], "params": json.loads(row["params"]),
            "device": row["device"], "duration_s": row["duration_s"],
            "summary": json.loads(row["summary"]), "created_at": row["created_at"],
            "created_by": row["created_by"]}


def get_run(db: Database, run_id: int, *, cases: bool = True) -> dict[str, Any]:
    """A run, with its cases in the set's order unless ``cases`` is False."""
    rows = list(db.query(_RUNS + " WHERE r.id = ?", [run_id]))
    if not rows:
        raise NotFound(f"evaluation run {run_id} does not exist; see 'appliance evals runs'")
    run = _run(rows[0])
    if cases:
        run["cases"] = [
            {"line": r["position"], "case": r["case_id"], "answer": r["answer"],
             "prompt_tokens": r["prompt_tokens"], "completion_tokens": r["completion_tokens"],
             "latency_ms": r["latency_ms"], "finish_reason": r["finish_reason"],
             "error": r["error"], "scores": json.loads(r["scores"]),
             "guardrail": json.loads(r["guardrail"]) if r["guardrail"] else None}
            for r in db.query("SELECT * FROM eval_results WHERE run_id = ? ORDER BY position",
                              [run_id])]
    return run


def list_runs(db: Database, evalset: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first; of one evaluation set (its name) when given."""
    where, args = ("", []) if evalset is None else (" WHERE s.name = ?", [evalset])
    return [_run(r) for r in db.query(_RUNS + where + " ORDER BY r.id DESC", args)]


def run_summary(db: Database, run_id: int) -> dict[str, Any]:
    """A run's summary per scorer: ``{scorer: {cases, mean, pass_rate}}``."""
    summary: dict[str, Any] = get_run(db, run_id, cases=False)["summary"]["scorers"]
    return summary


def _case_score(case: dict[str, Any]) -> float:
    scores = case["scores"]
    return statistics.fmean(s["score"] for s in scores) if scores else 0.0


def compare(db: Database, run_a: int, run_b: int) -> dict[str, Any]:
    """Two runs side by side: per scorer both means and pass rates; the cases (matched by
    id) whose mean score rose (``better``) or fell (``worse``) from A to B."""
    a, b = get_run(db, run_a), get_run(db, run_b)
    sa, sb = a["summary"]["scorers"], b["summary"]["scorers"]
    scorers = {}
    for name in sorted(set(sa) | set(sb)):
        mean_a = sa[name]["mean"] if name in sa else None
        mean_b = sb[name]["mean"] if name in sb else None
        scorers[name] = {
            "a": mean_a, "b": mean_b,
            "delta": None if mean_a is None or mean_b is None else round(mean_b - mean_a, 6),
            "a_pass_rate": sa[name]["pass_rate"] if name in sa else None,
            "b_pass_rate": sb[name]["pass_rate"] if name in sb else None}
    by_a = {c["case"]: c for c in a["cases"]}
    by_b = {c["case"]: c for c in b["cases"]}
    better: list[dict[str, Any]] = []
    worse: list[dict[str, Any]] = []
    same = 0
    for case_id, ca in by_a.items():
        cb = by_b.get(case_id)
        if cb is None:
            continue
        score_a, score_b = _case_score(ca), _case_score(cb)
        if abs(score_b - score_a) <= EPSILON:
            same += 1
            continue
        changed = {}
        for s in cb["scores"]:
            old = next((x for x in ca["scores"] if x["scorer"] == s["scorer"]), None)
            if old is None or abs(old["score"] - s["score"]) > EPSILON:
                changed[s["scorer"]] = {"a": None if old is None else old["score"],
                                        "b": s["score"], "reason_b": s["reason"]}
        entry = {"case": case_id, "a": round(score_a, 6), "b": round(score_b, 6),
                 "answer_a": ca["answer"], "answer_b": cb["answer"], "scorers": changed}
        (better if score_b > score_a else worse).append(entry)
    brief = ("id", "evalset", "target", "model", "created_at")
    return {"a": {k: a[k] for k in brief}, "b": {k: b[k] for k in brief},
            "scorers": scorers, "better": better, "worse": worse, "same": same,
            "only_a": [c for c in by_a if c not in by_b],
            "only_b": [c for c in by_b if c not in by_a]}
