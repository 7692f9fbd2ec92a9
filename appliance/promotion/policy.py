"""A model's promotion policy: which gates a version must pass, and how it rolls out.

A policy is YAML, set per model (``appliance models policy NAME FILE.yaml``)
and stored in ``promotion_policies``; a model without one uses
``DEFAULT_POLICY``. Every key is optional and falls back to the default, so a
policy states only what it changes. An unknown key or a bad value is refused
naming the key, as the configuration file is.

```yaml
gates:
  metrics:                      # on the candidate's held-out test split
    - metric: accuracy          # a metric both models are scored on
      min: 0.70                 # absolute floor (max: for an error metric)
      max_regression: 0.0       # how much worse than production it may be
  latency: {max_p99_ms: 50}     # in-process load test, batch 1
  signature: true               # inputs/outputs compatible with production
  parity: true                  # ONNX checker now, parity at training
  data_quality: {max_missing_share: 0.5, max_out_of_range_share: 0.1}
  approval: {required: false, count: 1}
rollout:
  shadow: {min_requests: 100, min_minutes: 0, min_agreement: 0.95}
  canary: {weight: 0.1, min_requests: 100, min_minutes: 0}
  margins: {error_rate: 0.01, p99_latency_ratio: 1.5, quality: 0.02}
```
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import yaml

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput
from appliance.registry.versions import _model_id
from appliance.storage.db import Database, immediate
from appliance.training.recipe import METRICS

# Metrics where smaller is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae", "error_rate", "loss"})
PRIMARY_METRIC = {"classification": "accuracy", "regression": "rmse"}
KNOWN_METRICS = frozenset({"primary", *(m for names in METRICS.values() for m in names)})

DEFAULT_POLICY: dict[str, Any] = {
    "gates": {
        # "primary": accuracy for a classifier, rmse for a regressor.
        "metrics": [{"metric": "primary", "max_regression": 0.0}],
        "latency": {"max_p99_ms": 100.0},
        "signature": True,
        "parity": True,
        "data_quality": {"max_missing_share": 0.5, "max_out_of_range_share": 0.1},
        "approval": {"required": False, "count": 1},
    },
    "rollout": {
        "shadow": {"min_requests": 100, "min_minutes": 0.0, "min_agreement": 0.95},
        "canary": {"weight": 0.1, "min_requests": 100, "min_minutes": 0.0},
        "margins": {"error_rate": 0.01, "p99_latency_ratio": 1.5, "quality": 0.02},
    },
}

_NUMBERS = {
    "gates.latency.max_p99_ms", "gates.data_quality.max_missing_share",
    "gates.data_quality.max_out_of_range_share", "rollout.shadow.min_minutes",
    "rollout.shadow.min_agreement", "rollout.canary.weight", "rollout.canary.min_minutes",
    "rollout.margins.error_rate", "rollout.margins.p99_latency_ratio", "rollout.margins.quality",
}
_INTS = {"gates.approval.count", "rollout.shadow.min_requests", "rollout.canary.min_requests"}
_BOOLS = {"gates.signature", "gates.parity", "gates.approval.required"}
_METRIC_KEYS = {"metric", "min", "max", "max_regression"}


def _merge(base: dict[str, Any], given: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in given.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise BadInput(f"policy: unknown key '{path}'; known: "
                           + ", ".join(f"{prefix}{k}" for k in base))
        if path == "gates.metrics":
            out[key] = _metrics(value)
        elif path in ("gates.latency", "gates.data_quality") and value is None:
            out[key] = None  # the gate is switched off
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise BadInput(f"policy: '{path}' must be a mapping")
            out[key] = _merge(base[key], value, path + ".")
        else:
            out[key] = _scalar(path, value)
    return out


def _scalar(path: str, value: Any) -> Any:
    if path in _BOOLS:
        if not isinstance(value, bool):
            raise BadInput(f"policy: '{path}' must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BadInput(f"policy: '{path}' must be a number of zero or more")
    if path in _INTS:
        if not isinstance(value, int):
            raise BadInput(f"policy: '{path}' must be a whole number")
        return value
    if path in ("rollout.canary.weight", "rollout.shadow.min_agreement") and value > 1:
        raise BadInput(f"policy: '{path}' must be between 0 and 1")
    return float(value)


def _metrics(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput("policy: 'gates.metrics' must be a list of {metric, min, max, "
                       "max_regression}")
    out = []
    for i, item in enumerate(value):
        where = f"gates.metrics[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), str):
            raise BadInput(f"policy: '{where}' needs 'metric' naming a metric")
        unknown = set(item) - _METRIC_KEYS
        if unknown:
            raise BadInput(f"policy: unknown key '{where}.{sorted(unknown)[0]}'")
        if item["metric"] not in KNOWN_METRICS:
            raise BadInput(f"policy: '{where}.metric' {item['metric']!r} is not a metric; "
                           f"known: {', '.join(sorted(KNOWN_METRICS))}")
        if not {"min", "max", "max_regression"} & {k for k, v in item.items() if v is not None}:
            raise BadInput(f"policy: '{where}' ({item['metric']}) needs min, max or "
                           "max_regression")
        entry: dict[str, Any] = {"metric": item["metric"]}
        for key in ("min", "max", "max_regression"):
            if item.get(key) is not None:
                v = item[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise BadInput(f"policy: '{where}.{key}' must be a number")
                entry[key] = float(v)
        out.append(entry)
    return out


def parse_policy(text: str) -> dict[str, Any]:
    """Validate a policy's YAML and return it complete, defaults filled in."""
    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise BadInput(f"policy is not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise BadInput("policy: expected a mapping with 'gates' and/or 'rollout'")
    return _merge(DEFAULT_POLICY, loaded, "")


def get_policy(db: Database, name: str) -> dict[str, Any]:
    """The model's policy, or the default one."""
    model_id = _model_id(db, name)
    row = db.execute("SELECT policy FROM promotion_policies WHERE model_id = ?",
                     [model_id]).fetchone()
    return json.loads(row[0]) if row else copy.deepcopy(DEFAULT_POLICY)


def policy_source(db: Database, name: str) -> str | None:
    """The YAML as it was set, or None for a model on the default policy."""
    model_id = _model_id(db, name)
    row = db.execute("SELECT source FROM promotion_policies WHERE model_id = ?",
                     [model_id]).fetchone()
    return str(row[0]) if row else None


def _check_task(db: Database, model_id: int, policy: dict[str, Any]) -> None:
    """Metric gates the model's task has no metric for are refused, naming them."""
    tasks = set()
    for (signature,) in db.execute(
            "SELECT signature FROM model_versions WHERE model_id = ?", [model_id]):
        task = json.loads(signature).get("task")
        if task in METRICS:
            tasks.add(task)
    if len(tasks) != 1:
        return
    task = tasks.pop()
    wrong = [m["metric"] for m in policy["gates"]["metrics"]
             if m["metric"] != "primary" and m["metric"] not in METRICS[task]]
    if wrong:
        raise BadInput(f"policy: metric(s) {', '.join(wrong)} are not {task} metrics; a "
                       f"{task} model is scored on {', '.join(METRICS[task])} (or 'primary')")


def set_policy(db: Database, name: str, text: str, *, actor: str) -> dict[str, Any]:
    """Validate and store a model's policy, with its audit entry."""
    policy = parse_policy(text)
    with immediate(db):
        model_id = _model_id(db, name)
        _check_task(db, model_id, policy)
        db.execute(
            "INSERT INTO promotion_policies (model_id, source, policy, set_at, set_by)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET"
            " source = excluded.source, policy = excluded.policy, set_at = excluded.set_at,"
            " set_by = excluded.set_by",
            [model_id, text, json.dumps(policy, sort_keys=True), now_iso(), actor])
        audit.append(db, actor=actor, action="model.policy.set", target=f"model:{name}",
                     details={"policy": policy})
    return policy


def metric_name(name: str, task: str | None) -> str:
    if name == "primary":
        return PRIMARY_METRIC.get(task or "", "accuracy")
    return name
