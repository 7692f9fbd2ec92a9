"""Retraining policies: when an alert becomes a ``retrain`` job, and what that job builds.

The policy is stored here; ``appliance.jobs.drift.trigger_retraining`` reads it to turn
open alerts into jobs, and ``appliance.jobs.training`` runs them.

A model has no policy by default, so no alert ever starts training on its
own. A policy is YAML, set per model (``appliance monitoring policy NAME
FILE.yaml``); every key is optional::

    enabled: true                 # default false
    triggers: [data_drift, concept_drift, performance]   # alert kinds that retrain
    approval: required            # or "none": promote the candidate without a person
    promote_to: shadow            # where an unapproved candidate goes: shadow, canary
                                  # or production (always through the promotion gates)
    recent_days: 30               # labelled production data from this far back
    production_since: recent      # or "alert": only production data since the start of
                                  # the window whose check raised the triggering alert
    include_original: true        # false: train on the labelled production data alone,
                                  # when the world has moved on from the original data
    min_labelled_rows: 0          # retrain only with at least this many labelled rows
    cooldown_minutes: 60          # no second retrain job for the model within this time

The retrain job adds the recent labelled production rows (sampled inputs
joined with their feedback labels, one row per label however often the client
retried the request; see ``appliance.monitoring.feedback``) to the version's original training data,
registers that as a new version of the dataset, trains the production
version's recorded recipe on it, and hands the new version to promotion.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from appliance import audit
from appliance.audit.log import now_iso
from appliance.config import Config
from appliance.datasets import add_dataset, get_dataset_version
from appliance.errors import BadInput
from appliance.monitoring.alerts import KINDS
from appliance.registry import ModelVersion, resolve
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home

DEFAULT_POLICY: dict[str, Any] = {
    "enabled": False,
    "triggers": ["data_drift", "concept_drift", "performance"],
    "approval": "required",
    "promote_to": "shadow",
    "recent_days": 30,
    "production_since": "recent",
    "include_original": True,
    "min_labelled_rows": 0,
    "cooldown_minutes": 60,
}
APPROVALS = ("required", "none")
TARGETS = ("shadow", "canary", "production")
SINCE = ("recent", "alert")


def parse_policy(text: str) -> dict[str, Any]:
    """Validate a policy's YAML and merge it over the default; BadInput names the key."""
    try:
        given = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"retraining policy is not valid YAML: {exc}") from exc
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise BadInput("retraining policy must be a mapping of keys to values")
    policy = dict(DEFAULT_POLICY)
    for key, value in given.items():
        if not isinstance(key, str) or key not in DEFAULT_POLICY:
            raise BadInput(f"retraining policy: unknown key '{key}'; known: "
                           + ", ".join(DEFAULT_POLICY))
        policy[key] = value
    if not isinstance(policy["enabled"], bool):
        raise BadInput("retraining policy: 'enabled' must be true or false")
    on = policy["triggers"]
    if not isinstance(on, list) or not on or any(k not in KINDS for k in on):
        raise BadInput("retraining policy: 'triggers' must be a list of alert kinds from "
                       + ", ".join(KINDS))
    if policy["approval"] not in APPROVALS:
        raise BadInput("retraining policy: 'approval' must be 'required' or 'none'")
    if policy["production_since"] not in SINCE:
        raise BadInput("retraining policy: 'production_since' must be one of " + ", ".join(SINCE))
    if not isinstance(policy["include_original"], bool):
        raise BadInput("retraining policy: 'include_original' must be true or false")
    if policy["promote_to"] not in TARGETS:
        raise BadInput("retraining policy: 'promote_to' must be one of " + ", ".join(TARGETS))
    for key, low in (("recent_days", 0), ("min_labelled_rows", 0), ("cooldown_minutes", 0)):
        value = policy[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low \
                or not math.isfinite(value):
            raise BadInput(f"retraining policy: '{key}' must be a number >= {low}")
    return policy


def set_policy(db: Database, name: str, text: str, *, actor: str) -> dict[str, Any]:
    policy = parse_policy(text)
    with immediate(db):
        resolve(db, name)  # the model must exist
        db.execute("INSERT INTO retraining_policies (model, source, policy, set_at, set_by)"
                   " VALUES (?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET"
                   " source = excluded.source, policy = excluded.policy,"
                   " set_at = excluded.set_at, set_by = excluded.set_by",
                   [name, text, json.dumps(policy), now_iso(), actor])
        audit.append(db, actor=actor, action="monitoring.policy.set", target=f"model:{name}",
                     details={"policy": policy})
    return policy


def get_policy(db: Database, name: str) -> dict[str, Any]:
    """The model's policy, or the default (off)."""
    row = db.execute("SELECT policy FROM retraining_policies WHERE model = ?", [name]).fetchone()
    return {**DEFAULT_POLICY, **json.loads(row[0])} if row else dict(DEFAULT_POLICY)


# --- what the retrain job builds ----------------------------------------------------


def _cell(value: Any, column_type: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if column_type == "boolean" and isinstance(value, (int, float)):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def production_rows(mon: Database, model: str, since: float,
                    columns: list[dict[str, str]], target: str) -> list[list[str]]:
    """Sampled inputs with their feedback labels since ``since``, as CSV cells in the order
    of ``columns`` (the training data's schema; columns the model never saw stay empty).
    Each label is one row: joined to its one request, as ``feedback.LABELLED_REQUEST`` says,
    however often a client retried it. Rows come in the order of their request ids, not of
    when concurrent requests happened to finish, so the same labelled requests always make
    the same dataset (and the same seeded split)."""
    from appliance.monitoring.feedback import LABELLED_REQUEST  # numpy: not at start-up

    out: list[list[str]] = []
    for row, label, inputs in mon.execute(
        "SELECT f.row, f.label, r.inputs FROM feedback f"
        f" JOIN requests r ON r.id = ({LABELLED_REQUEST})"
        " WHERE f.model = ? AND r.ts >= ? AND r.inputs IS NOT NULL"
        " ORDER BY f.request_id, f.row", [model, since]):
        try:
            tensors = json.loads(inputs)
        except ValueError:
            continue
        cells = []
        for col in columns:
            if col["name"] == target:
                cells.append(label)
                continue
            values = tensors.get(col["name"])
            value = None
            if isinstance(values, list) and row < len(values):
                value = values[row]
                if isinstance(value, list):
                    value = value[0] if value else None
            cells.append(_cell(value, col["type"]))
        out.append(cells)
    return out


@dataclass(frozen=True)
class RetrainData:
    dataset: str  # NAME@VERSION of the new dataset version
    original: str
    original_rows: int
    production_rows: int


def alert_window_start(home: Home, alert_id: int) -> float | None:
    """When the window of the check that raised an alert began (Unix seconds)."""
    with home.db() as db:
        row = db.execute("SELECT check_id FROM alerts WHERE id = ?", [alert_id]).fetchone()
    if row is None or row[0] is None:
        return None
    with home.monitoring_db() as mon:
        found = mon.execute("SELECT window_start FROM checks WHERE id = ?", [row[0]]).fetchone()
    return float(found[0]) if found else None


def build_retrain_dataset(home: Home, mv: ModelVersion, workdir: Path, *, actor: str,
                          recent_days: float, config: Config, since: float | None = None,
                          include_original: bool = True) -> RetrainData:
    """The original training file (unless ``include_original`` is false) plus labelled
    production rows since ``since`` (default: ``recent_days`` ago), registered as the next
    version of the original dataset (same target)."""
    with home.db() as db:
        if mv.dataset is None:
            raise BadInput(f"{mv.ref} was not trained here (no dataset); it can not be retrained")
        original = get_dataset_version(db, mv.dataset)
    target = mv.signature.get("target") or original.target
    if not target:
        raise BadInput(f"{mv.ref} has no target column to label production rows with")
    with home.monitoring_db() as mon:
        start = time.time() - recent_days * 86400.0 if since is None else since
        rows = production_rows(mon, mv.name, start, original.schema, str(target))
    if not include_original and not rows:
        raise BadInput(f"no labelled production rows for {mv.name} since "
                       f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start))}: nothing "
                       "to retrain on without the original data")
    text = home.blobs.read_bytes(original.digest).decode("utf-8-sig")
    if not include_original:
        text = text.splitlines()[0] + "\n"  # the header only
    buffer = io.StringIO()
    buffer.write(text if text.endswith("\n") or not text else text + "\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{original.name}-retrain.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8")
    with home.db() as db:
        dv, _ = add_dataset(db, home.blobs, original.name, path, actor=actor,
                            target=original.target, max_file_mb=config["datasets.max_file_mb"],
                            infer_rows=config["datasets.infer_rows"],
                            profile_bins=config["datasets.profile_bins"],
                            profile_top_k=config["datasets.profile_top_k"])
    return RetrainData(dv.ref, original.ref, original.row_count if include_original else 0,
                       len(rows))

