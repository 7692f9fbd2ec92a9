"""The promotion gates: each one a value, a threshold and a verdict.

``run_gates`` measures a candidate against the policy and the current
production version and returns every gate's result, passed or not, so the
report says all that is wrong at once. The approval gate reads the approvals
recorded so far; the others are computed here, outside any transaction
(scoring and the load test take seconds).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError, BadInput
from appliance.llm.folder import is_llm
from appliance.promotion.policy import LOWER_IS_BETTER, metric_name
from appliance.registry import ModelVersion
from appliance.storage.db import Database
from appliance.storage.home import Home


@dataclass
class Gate:
    gate: str
    value: Any
    threshold: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateReport:
    ref: str
    target: str
    baseline: str | None
    gates: list[Gate] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failed(self) -> list[str]:
        return [g.gate for g in self.gates if not g.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "target": self.target, "baseline": self.baseline,
                "passed": self.passed, "failed": self.failed,
                "gates": [g.as_dict() for g in self.gates], "evaluation": self.evaluation}


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def _metric_gates(policy: dict[str, Any], task: str | None, cand: dict[str, float] | None,
                  prod: dict[str, float] | None, why: str, has_production: bool) -> list[Gate]:
    gates: list[Gate] = []
    for spec in policy["gates"]["metrics"]:
        name = metric_name(spec["metric"], task)
        lower = name in LOWER_IS_BETTER
        value = cand.get(name) if cand is not None else None
        if "min" in spec or "max" in spec:
            bound = spec.get("min") if "min" in spec else spec.get("max")
            op = ">=" if "min" in spec else "<="
            ok = value is not None and (value >= bound if op == ">=" else value <= bound)
            gates.append(Gate(f"metric:{name}", _fmt(value), f"{op} {bound}", bool(ok),
                              "" if value is not None else why or f"no metric '{name}'"))
        if "max_regression" in spec:
            allowed = spec["max_regression"]
            if not has_production:
                gates.append(Gate(f"metric:{name}:vs_production", _fmt(value),
                                  "no production version", value is not None,
                                  "" if value is not None else why))
                continue
            base = prod.get(name) if prod is not None else None
            if value is None or base is None:
                gates.append(Gate(f"metric:{name}:vs_production", _fmt(value),
                                  f"production {_fmt(base)}", False,
                                  why or f"metric '{name}' missing on one side"))
                continue
            limit = base + allowed if lower else base - allowed
            ok = value <= limit + 1e-12 if lower else value >= limit - 1e-12
            gates.append(Gate(f"metric:{name}:vs_production", _fmt(value),
                              f"{'<=' if lower else '>='} {_fmt(limit)} (production "
                              f"{_fmt(base)}, {'+' if lower else '-'}{allowed})", ok))
    return gates


def signature_compatible(candidate: dict[str, Any], production: dict[str, Any]) -> list[str]:
    """What a client of production would find broken in the candidate (empty: compatible)."""
    problems = []
    prod_inputs = {s["name"]: s for s in production.get("inputs", [])}
    for spec in candidate.get("inputs", []):
        old = prod_inputs.get(spec["name"])
        if old is None:
            problems.append(f"new required input '{spec['name']}'")
        elif old["datatype"] != spec["datatype"]:
            problems.append(f"input '{spec['name']}' {old['datatype']} -> {spec['datatype']}")
    cand_outputs = {s["name"]: s for s in candidate.get("outputs", [])}
    for spec in production.get("outputs", []):
        new = cand_outputs.get(spec["name"])
        if new is None:
            problems.append(f"output '{spec['name']}' removed")
        elif new["datatype"] != spec["datatype"]:
            problems.append(f"output '{spec['name']}' {spec['datatype']} -> {new['datatype']}")
    if production.get("classes") and candidate.get("classes") != production.get("classes"):
        problems.append(f"classes {production.get('classes')} -> {candidate.get('classes')}")
    return problems


def run_gates(home: Home, db: Database, mv: ModelVersion,
              production: ModelVersion | None, policy: dict[str, Any], config: Config, *,
              target: str = "production", breaking_change: bool = False,
              approvals: list[dict[str, Any]] | None = None) -> GateReport:
    report = GateReport(ref=mv.ref, target=target,
                        baseline=production.ref if production else None)
    gates = policy["gates"]
    if is_llm(mv.signature):
        report.gates.extend(llm_gates(home, mv, production))
        _approval(report, gates, mv, approvals)
        return report
    # numpy, onnxruntime and the trainer: imported here, so showing a policy does not load them
    from appliance.promotion import evaluate

    task = mv.signature.get("task")
    data = home.blobs.read_bytes(mv.onnx_digest, verify=True)

    es: evaluate.EvalSet | None = None
    why = ""
    try:
        es = evaluate.evaluation_set(home, db, mv)
    except BadInput as exc:
        why = str(exc)
    cand_metrics: dict[str, float] | None = None
    prod_metrics: dict[str, float] | None = None
    if es is not None:
        report.evaluation = {"dataset": es.dataset, "split": "test", "rows": int(len(es.rows))}
        try:
            cand_metrics = evaluate.score(data, mv.signature, es)
        except ApplianceError as exc:
            why = f"candidate: {exc}"
        if production is not None:
            try:
                prod_metrics = evaluate.score(
                    home.blobs.read_bytes(production.onnx_digest, verify=True),
                    production.signature, es)
            except ApplianceError as exc:
                why = f"production {production.ref}: {exc}"
        report.evaluation["candidate"] = cand_metrics
        report.evaluation["production"] = prod_metrics
    report.gates.extend(_metric_gates(policy, task, cand_metrics, prod_metrics, why,
                                      production is not None))

    if gates["latency"] is not None:
        limit = gates["latency"]["max_p99_ms"]
        timing = evaluate.load_test(data, mv.signature, es,
                                    requests=config["promotion.load_test_requests"],
                                    warmup=config["promotion.load_test_warmup"])
        report.evaluation["latency"] = timing
        report.gates.append(Gate("latency_p99_ms", _fmt(timing["p99_ms"]), f"<= {limit}",
                                 timing["p99_ms"] <= limit,
                                 f"{timing['requests']} requests, batch 1, one CPU thread"))

    if gates["signature"]:
        if production is None:
            report.gates.append(Gate("signature", "no production version", "compatible", True))
        else:
            problems = signature_compatible(mv.signature, production.signature)
            if problems and breaking_change:
                report.gates.append(Gate("signature", "; ".join(problems), "compatible", True,
                                         "declared a breaking change"))
            else:
                report.gates.append(Gate("signature", "; ".join(problems) or "compatible",
                                         f"compatible with {production.ref}", not problems))

    if gates["parity"]:
        import onnx  # here, not at start-up: listing commands need no ONNX

        try:
            onnx.checker.check_model(onnx.load_model_from_string(data))
            checker = "passed"
        except (onnx.checker.ValidationError, ValueError) as exc:
            checker = f"failed: {str(exc).splitlines()[0]}"
        parity = mv.metrics.get("parity_max_abs_diff")
        if mv.run_id is not None and parity is None:
            ok, value = False, "no parity recorded at training"
        else:
            ok = checker == "passed"
            value = f"checker {checker}; parity " + (
                f"max |diff| {_fmt(float(parity))}" if parity is not None else "n/a (imported)")
        report.gates.append(Gate("onnx_checker_parity", value,
                                 f"checker passes, parity <= {config['training.parity_tolerance']}",
                                 ok))

    dq = gates["data_quality"]
    if dq is not None:
        if es is None:
            report.gates.append(Gate("data_quality", "no evaluation set", "an evaluation set",
                                     False, why))
        else:
            profile = (json.loads(home.blobs.read_bytes(mv.profile_digest))
                       if mv.profile_digest else None)
            q = evaluate.data_quality(mv.signature, profile, es)
            report.evaluation["data_quality"] = q
            report.gates.append(Gate("data_quality:missing_share", _fmt(q["missing_share"]),
                                     f"<= {dq['max_missing_share']}",
                                     q["missing_share"] <= dq["max_missing_share"],
                                     q["missing_column"]))
            report.gates.append(Gate("data_quality:out_of_range_share",
                                     _fmt(q["out_of_range_share"]),
                                     f"<= {dq['max_out_of_range_share']}",
                                     q["out_of_range_share"] <= dq["max_out_of_range_share"],
                                     q["out_of_range_column"]))

    _approval(report, gates, mv, approvals)
    return report


def _approval(report: GateReport, gates: dict[str, Any], mv: ModelVersion,
              approvals: list[dict[str, Any]] | None) -> None:
    if gates["approval"]["required"]:
        need = gates["approval"]["count"]
        who = [a["approver"] for a in approvals or []]
        report.gates.append(Gate("approval", len(who), f">= {need} approver(s)",
                                 len(who) >= need, ", ".join(who) or
                                 f"'appliance models approve {mv.ref}' by an approver"))


def llm_gates(home: Home, mv: ModelVersion, production: ModelVersion | None) -> list[Gate]:
    """The gates of a language model: every file of the folder verifies against the
    manifest, and the model loads and generates on this machine. (The metric, latency,
    parity and data-quality gates of tabular models do not apply; evaluation sets for
    language models are their own gate.)"""
    import time

    from appliance.gpu.inventory import NvmlSource
    from appliance.llm.folder import materialize, parse_manifest
    from appliance.llm.runtime import ERROR, GenaiRuntime, probe
    from appliance.onnxtools.providers import check_providers

    out: list[Gate] = []
    manifest = home.blobs.read_bytes(mv.onnx_digest, verify=True)
    try:
        files = parse_manifest(manifest)
        folder = materialize(home.blobs, manifest, home.llm_dir / mv.onnx_digest)
    except ApplianceError as exc:
        return [Gate("llm_files", str(exc), "every file matches the manifest", False)]
    out.append(Gate("llm_files", f"{len(files)} files verified",
                    "every file matches the manifest", True))
    if production is not None and not is_llm(production.signature):
        out.append(Gate("signature", f"{production.ref} is a tabular model", "a language model",
                        False))
    cuda = "CUDAExecutionProvider" in check_providers(NvmlSource().read()).usable
    try:
        runtime = GenaiRuntime(folder, cuda=cuda, name=mv.ref)
    except ApplianceError as exc:
        out.append(Gate("llm_generates", str(exc), "loads and generates", False))
        return out
    try:
        started = time.perf_counter()
        answer = probe(runtime, max_tokens=8)
        elapsed = time.perf_counter() - started
    finally:
        runtime.close()
    ok = answer is not None and answer.finish_reason != ERROR and answer.completion_tokens > 0
    value = (f"{answer.completion_tokens} tokens in {elapsed * 1e3:.0f} ms on "
             f"{'cuda' if cuda else 'cpu'}" if ok and answer is not None else
             (answer.error if answer is not None else None) or "no answer in 300 s")
    out.append(Gate("llm_generates", value, "loads and generates", bool(ok)))
    return out
