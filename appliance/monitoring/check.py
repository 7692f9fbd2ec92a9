"""One monitoring check of a served model over a window: what ``drift report`` and the
``drift-check`` job run.

It reads only the request log, the feedback table and the version's reference
profile (computed when its training data was registered), never the training
data itself, and judges:

- data drift of the kept inputs, and prediction drift of the kept outputs
  against the training target's distribution (``appliance.drift``), each row
  weighted by what it stands for (the request log keeps every request up to
  ``serving.log_rows_per_second``, then a weighted sample);
- data quality per feature (``appliance.monitoring.quality``);
- traffic: p99 latency and the share of failed requests;
- with enough labels: performance against the version's test metrics, and
  ADWIN and Page-Hinkley over the error stream (concept drift);
- without labels: a CBPE-style estimate of accuracy, reported as an estimate
  and never alerted on.

With ``record`` the result is stored in ``checks`` (for history charts), each
breach raises or refreshes an alert, and a model's retraining policy may turn
a new alert into a retrain job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.config import Config, parse_config
from appliance.drift import DriftOptions, DriftReport, Reference, check
from appliance.drift.detectors import ADWIN, PageHinkley
from appliance.drift.performance import estimate_classification
from appliance.monitoring import alerts as alerts_mod
from appliance.monitoring.alerts import Breach
from appliance.monitoring.feedback import labelled, performance
from appliance.monitoring.quality import QualityLimits, QualityReport, assess, feature_kinds
from appliance.monitoring.rollup import last_rolled_id
from appliance.monitoring.traffic import Samples, Window, as_float, samples, traffic
from appliance.registry import ModelVersion, output_name, resolve
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home


@dataclass
class ModelCheck:
    model: str
    version: int
    window: Window
    sampled_rows: int  # kept rows the check saw (see ``selection``)
    traffic: list[dict[str, Any]]
    drift: DriftReport | None
    quality: QualityReport | None
    performance: dict[str, Any] | None
    estimate: dict[str, Any] | None
    breaches: list[Breach]
    notes: list[str] = field(default_factory=list)
    check_id: int | None = None
    new_alerts: list[int] = field(default_factory=list)
    resolved_alerts: list[int] = field(default_factory=list)
    retrain_jobs: list[int] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # see ``selection``

    @property
    def concept_drift(self) -> bool | None:
        if self.performance is None:
            return None
        return bool(self.performance["adwin"]["drift"] or self.performance["page_hinkley"]["drift"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "window": self.window.as_dict(),
            "sampled_rows": self.sampled_rows, "selection": self.selection,
            "traffic": self.traffic,
            "data_drift": self.drift.as_dict() if self.drift else None,
            "quality": self.quality.as_dict() if self.quality else None,
            "performance": self.performance, "estimate": self.estimate,
            "concept_drift": self.concept_drift,
            "breaches": [{"kind": b.kind, "message": b.message} for b in self.breaches],
            "notes": self.notes, "check_id": self.check_id, "new_alerts": self.new_alerts,
            "resolved_alerts": self.resolved_alerts, "retrain_jobs": self.retrain_jobs,
        }


# What a check needs a reference profile for, said in a report of a version without one.
NEEDS_REFERENCE = ("data drift", "prediction drift", "out-of-range and unseen-category shares")


def load_profile(home: Home, mv: ModelVersion) -> dict[str, Any] | None:
    """The version's reference profile; None for an imported version given none."""
    if not mv.profile_digest:
        return None
    profile: dict[str, Any] = json.loads(home.blobs.read_bytes(mv.profile_digest))
    return profile


def no_reference_note(mv: ModelVersion) -> str:
    return (f"{mv.ref} has no reference data, so {', '.join(NEEDS_REFERENCE)} are not "
            f"judged; give it a reference with 'appliance models attach {mv.ref} "
            "--reference DATASET' (its training data, registered with 'appliance datasets "
            "add'). Traffic, errors, latency, missing values and quality from labels are "
            "judged without one.")


def _prediction_column(mv: ModelVersion, s: Samples, profile: dict[str, Any]) -> Any:
    """Predicted values laid out like the training target's profile column, or None."""
    target = mv.signature.get("target")
    column = profile.get("columns", {}).get(target) if target else None
    if column is None:
        return None
    if output_name(mv.signature, "prediction") in s.outputs:
        values, _ = as_float(s.outputs[output_name(mv.signature, "prediction")])
        return values
    probs = s.outputs.get(output_name(mv.signature, "probabilities"))
    classes = [str(c) for c in mv.signature.get("classes", [])]
    if probs is None or not classes:
        return None
    predicted: list[str | None] = [
        classes[int(np.argmax(p))] if isinstance(p, list) and len(p) == len(classes) else None
        for p in probs]
    if column.get("type") == "categorical":
        return predicted
    out = np.full(len(predicted), np.nan)
    for i, c in enumerate(predicted):
        if c is None:
            continue
        if c in ("true", "false"):
            out[i] = 1.0 if c == "true" else 0.0
        else:
            try:
                out[i] = float(c)
            except ValueError:
                return None
    return out


def selection(s: Samples, rows: list[dict[str, Any]], version: int,
              rows_per_second: int, rounded: bool = False) -> dict[str, Any]:
    """How many rows a check saw, how many requests they stand for and how they were
    chosen, with ``how`` saying it in words. ``rounded``: the traffic counts came partly
    from per-minute roll-ups, which round the window out to whole minutes."""
    live = [r for r in rows if r["version"] == version and r["route"] == "live"]
    answered = sum(r["requests"] - r["client_errors"] - r["failures"] for r in live)
    answered = max(answered, s.requests)
    of = f"about {answered}" if rounded else str(answered)
    if not s.requests:
        how = f"none of {of} requests kept their inputs"
    elif s.weighted:
        how = (f"{s.requests} of {of} requests, kept at up to {rows_per_second} rows/s, "
               "then sampled")
    elif s.requests >= answered:
        how = f"all {answered} requests"
    else:
        how = (f"{s.requests} of {of} requests (the others' inputs were not kept: "
               "dropped by a full log queue, emptied after monitoring.input_retention_days, "
               "or logged under another limit)")
    return {"rows": s.rows, "requests": s.requests, "answered": answered,
            "represented": round(s.represented, 1), "weighted": s.weighted,
            "rows_per_second": rows_per_second,
            "how": f"{s.rows} rows from {how}"
            + (f"; weighted, they stand for {s.represented:.0f} requests" if s.weighted
               else "")}


def _data_drift(mv: ModelVersion, s: Samples, profile: dict[str, Any],
                kinds: dict[str, str], options: DriftOptions) -> DriftReport:
    reference = Reference.from_profile(profile)
    current: dict[str, Any] = {}
    names = [n for n in kinds if n in reference.columns]
    for name in names:
        values = s.inputs.get(name, [None] * s.rows)
        if kinds[name] == "categorical":
            current[name] = [v if isinstance(v, str) and v else None for v in values]
        else:
            current[name], _ = as_float(values)
    prediction = None
    predicted = _prediction_column(mv, s, profile)
    if predicted is not None:
        prediction = str(mv.signature["target"])
        current[prediction] = predicted
        names.append(prediction)
    return check(reference, current, options, prediction=prediction, columns=names,
                 weights=s.weights if s.weighted else None)


def _primary(mv: ModelVersion) -> tuple[str, bool]:
    """The metric performance is judged on, and whether larger is better."""
    return ("rmse", False) if mv.signature.get("task") == "regression" else ("accuracy", True)


def _concept(mv: ModelVersion, mon: Database, window: Window, min_labels: int,
             tolerance: float) -> tuple[dict[str, Any] | None, list[Breach], int]:
    names = (output_name(mv.signature, "probabilities"), output_name(mv.signature, "prediction"))
    data = labelled(mon, mv.name, window, names).get(mv.version)
    n = len(data.labels) if data else 0
    if data is None or n < min_labels:
        return None, [], n
    metrics, errors = performance(mv, data)
    adwin, ph = ADWIN(delta=0.002), PageHinkley(delta=0.005, threshold=50.0)
    adwin_at = ph_at = None
    for i, e in enumerate(errors):
        if adwin.update(float(e)) and adwin_at is None:
            adwin_at = i
        if ph.update(float(e)) and ph_at is None:
            ph_at = i
    test = dict(mv.metrics.get("test", {}))
    name, higher = _primary(mv)
    reference = test.get(name)
    result: dict[str, Any] = {
        "labelled_rows": n, "metrics": metrics, "test_metrics": test, "primary": name,
        "adwin": {"delta": 0.002, "drift": adwin_at is not None, "first_at_row": adwin_at,
                  "detections": adwin.n_detections},
        "page_hinkley": {"delta": 0.005, "threshold": 50.0, "drift": ph_at is not None,
                         "first_at_row": ph_at, "detections": ph.n_detections},
    }
    breaches: list[Breach] = []
    value = metrics.get(name)
    if isinstance(reference, (int, float)) and value is not None:
        if higher:
            decayed = value < reference - tolerance
        else:
            decayed = value > reference * (1 + tolerance)
        result["decay"] = {"metric": name, "window": value, "test": reference,
                           "tolerance": tolerance, "breach": decayed}
        if decayed:
            breaches.append(Breach("performance",
                                   f"{name} {value:.4f} on {n} labelled rows against "
                                   f"{reference:.4f} on the test split", result["decay"]))
    for key, label in (("adwin", "ADWIN"), ("page_hinkley", "Page-Hinkley")):
        if result[key]["drift"]:
            first = result[key]["first_at_row"]
            when = float(data.ts[first]) if first is not None else None
            result[key]["first_at"] = when
            breaches.append(Breach("concept_drift",
                                   f"{label} detected a change in the error stream at labelled "
                                   f"row {first} of {n}", {"detector": key, "row": first}))
    # one concept_drift alert, however many detectors agree
    concept = [b for b in breaches if b.kind == "concept_drift"]
    breaches = [b for b in breaches if b.kind != "concept_drift"] + concept[:1]
    return result, breaches, n


def _estimate(mv: ModelVersion, s: Samples) -> dict[str, Any] | None:
    probs = s.outputs.get(output_name(mv.signature, "probabilities"))
    classes = mv.signature.get("classes") or []
    if not probs or not classes:
        return None
    arr = np.array([p for p in probs if isinstance(p, list) and len(p) == len(classes)],
                   dtype=np.float64)
    if not len(arr):
        return None
    if len(classes) == 2:
        est = estimate_classification(np.clip(arr[:, 1], 0.0, 1.0))
    else:
        top = arr.max(axis=1)
        est = {"estimate": True, "method": "expected accuracy from calibrated confidence "
               "(mean top-class probability; assumes P(y|x) unchanged)",
               "accuracy": float(top.mean()), "count": float(len(top))}
    est["label"] = "ESTIMATE (no labels): valid only for a calibrated model while P(y|x) holds"
    return est


def _traffic_breaches(mv: ModelVersion, rows: list[dict[str, Any]],
                      config: Config) -> tuple[list[Breach], set[str]]:
    live = [r for r in rows if r["version"] == mv.version and r["route"] == "live"]
    if not live or not live[0]["requests"]:
        return [], set()
    r = live[0]
    breaches = []
    limit = float(config["monitoring.latency_p99_ms"])
    evaluated = {"errors"}
    if limit > 0 and r["p99_ms"] is not None:
        evaluated.add("latency")
        if r["p99_ms"] > limit:
            breaches.append(Breach("latency", f"p99 latency {r['p99_ms']:.1f} ms over "
                                   f"{r['requests']} requests (limit {limit:g} ms)",
                                   {"p99_ms": r["p99_ms"], "limit_ms": limit}))
    max_errors = float(config["monitoring.max_error_rate"])
    if r["error_rate"] > max_errors:
        breaches.append(Breach("errors", f"{r['failures']} of {r['requests']} requests failed "
                               f"(rate {r['error_rate']:.3f}, limit {max_errors:g})",
                               {"error_rate": r["error_rate"], "limit": max_errors},
                               severity="critical"))
    return breaches, evaluated


def run_check(home: Home, name: str, *, window: Window | None = None,
              config: Config | None = None, options: DriftOptions | None = None,
              actor: str = "monitoring", record: bool = True) -> ModelCheck:
    """Check model ``name`` (its production version, else its latest) over ``window``."""
    config = config or parse_config({})
    window = window or Window.last(config["monitoring.window_minutes"])
    options = options or DriftOptions.from_config(config)
    min_rows = int(config["monitoring.min_rows"])
    with home.db() as db:
        mv = resolve(db, name)
    profile = load_profile(home, mv)
    kinds = feature_kinds(mv.signature)
    with home.monitoring_db() as mon:
        s = samples(mon, mv.name, window, version=mv.version)
        rows = traffic(mon, mv.name, window, by_minute=False)
        rounded = last_rolled_id(mon) > 0
        rejected = sum(r["client_errors"] for r in rows if r["version"] == mv.version)
        concept, concept_breaches, n_labels = _concept(
            mv, mon, window, int(config["monitoring.min_labels"]),
            float(config["monitoring.performance_tolerance"]))
    result = ModelCheck(mv.name, mv.version, window, s.rows, rows, None, None, concept,
                        _estimate(mv, s), [])
    result.selection = selection(s, rows, mv.version, int(config["serving.log_rows_per_second"]),
                                 rounded)
    evaluated: set[str] = set()
    if profile is None:
        result.notes.append(no_reference_note(mv))
    if s.rows >= min_rows:
        if profile is not None:
            result.drift = _data_drift(mv, s, profile, kinds, options)
            result.drift.current = result.selection["how"]
            evaluated.add("data_drift")
        result.quality = assess(s, kinds, profile or {}, QualityLimits.from_config(config),
                                rejected)
        evaluated.add("quality")
        if result.drift is not None and result.drift.drift_found:
            drifted = [c.name for c in result.drift.columns if c.drifted]
            result.breaches.append(Breach(
                "data_drift", f"{len(drifted)} column(s) drifted: {', '.join(drifted[:8])}"
                + (" (dataset drift)" if result.drift.dataset_drift else " (prediction drift)"),
                {"drifted": drifted, "share": result.drift.share}))
        if result.quality.breaches:
            result.breaches.append(Breach("quality", "; ".join(result.quality.breaches[:5]),
                                          {"breaches": result.quality.breaches}))
    else:
        result.notes.append(f"too few rows to judge drift and quality: {s.rows} < "
                            f"{min_rows} (monitoring.min_rows); {result.selection['how']}")
    if concept is not None:
        evaluated |= {"performance", "concept_drift"}
        result.breaches.extend(concept_breaches)
    else:
        result.notes.append(f"too few labelled rows to judge performance: {n_labels} < "
                            f"{config['monitoring.min_labels']} (monitoring.min_labels)")
    traffic_breaches, traffic_evaluated = _traffic_breaches(mv, rows, config)
    result.breaches.extend(traffic_breaches)
    evaluated |= traffic_evaluated
    if record:
        _record(home, result, evaluated, config, actor)
    return result


def _record(home: Home, result: ModelCheck, evaluated: set[str], config: Config,
            actor: str) -> None:
    with home.monitoring_db() as mon:
        with immediate(mon):
            cur = mon.execute(
                "INSERT INTO checks (model, version, checked_at, window_start, window_end,"
                " sampled_rows, labelled_rows, data_drift, prediction_drift, concept_drift,"
                " drifted_share, breaches, report, actor)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [result.model, result.version, time.time(), result.window.start,
                 result.window.end, result.sampled_rows,
                 result.performance["labelled_rows"] if result.performance else 0,
                 None if result.drift is None else int(result.drift.dataset_drift),
                 None if result.drift is None or result.drift.prediction is None
                 else int(result.drift.prediction.drifted),
                 None if result.concept_drift is None else int(result.concept_drift),
                 None if result.drift is None else result.drift.share,
                 json.dumps(sorted({b.kind for b in result.breaches})),
                 json.dumps(result.as_dict(), default=str, allow_nan=True), actor])
            result.check_id = int(cur.lastrowid or 0)
    with home.db() as db:
        new, resolved = alerts_mod.record_breaches(
            db, result.model, result.version, result.breaches, evaluated, actor=actor,
            check_id=result.check_id)
    result.new_alerts = [a.id for a in new]
    result.resolved_alerts = [a.id for a in resolved]
    if config["monitoring.syslog"]:
        alerts_mod.send_to_syslog(new)


def check_history(mon: Database, model: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Stored checks of a model, oldest first, with per-feature drift for charting."""
    rows = list(mon.query(
        "SELECT * FROM (SELECT * FROM checks WHERE model = ? ORDER BY checked_at DESC LIMIT ?)"
        " ORDER BY checked_at", [model, int(limit)]))
    out = []
    for r in rows:
        report = json.loads(r["report"])
        features = {}
        for col in (report.get("data_drift") or {}).get("columns", []):
            features[col["name"]] = {"drifted": col["drifted"], "role": col["role"],
                                     "effect": col["effect"], "effect_value": col["effect_value"],
                                     "pvalue_adjusted": col["pvalue_adjusted"]}
        out.append({
            "id": r["id"], "version": r["version"],
            "checked_at": Window(r["checked_at"], r["checked_at"]).as_dict()["start"],
            "window": Window(r["window_start"], r["window_end"]).as_dict(),
            "sampled_rows": r["sampled_rows"], "labelled_rows": r["labelled_rows"],
            "data_drift": None if r["data_drift"] is None else bool(r["data_drift"]),
            "prediction_drift": None if r["prediction_drift"] is None
            else bool(r["prediction_drift"]),
            "concept_drift": None if r["concept_drift"] is None else bool(r["concept_drift"]),
            "drifted_share": r["drifted_share"], "breaches": json.loads(r["breaches"]),
            "features": features,
        })
    return out
