"""Models and their versions: registering, resolving, listing, tags and descriptions.

A version is immutable once registered: its ONNX blob, signature, profile,
run and dataset never change. What may change later (tags, description) is
audited like everything else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance import audit
from appliance.audit.log import now_iso
from appliance.errors import BadInput, NotFound
from appliance.registry.refs import Ref, check_name, parse_ref
from appliance.storage.db import Database, immediate

DEFAULT_ALIAS = "production"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version; ``signature`` is ``{inputs, outputs, feature_names, ...}``."""

    id: int
    name: str
    version: int
    onnx_digest: str
    signature: dict[str, Any]
    profile_digest: str | None
    run_id: int | None
    dataset: str | None
    metrics: dict[str, Any]
    source: str
    description: str
    created_at: str
    created_by: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


_SELECT = (
    "SELECT mv.*, m.name AS name,"
    " (SELECT d.name || '@' || dv.version FROM dataset_versions dv"
    "  JOIN datasets d ON d.id = dv.dataset_id WHERE dv.id = mv.dataset_version_id) AS dataset"
    " FROM model_versions mv JOIN models m ON m.id = mv.model_id"
)


def _from_row(db: Database, row: dict[str, Any]) -> ModelVersion:
    tags = {r["key"]: r["value"] for r in db.query(
        "SELECT key, value FROM model_version_tags WHERE version_id = ? ORDER BY key",
        [row["id"]])}
    aliases = [r["alias"] for r in db.query(
        "SELECT alias FROM aliases WHERE version_id = ? ORDER BY alias", [row["id"]])]
    return ModelVersion(
        id=row["id"], name=row["name"], version=row["version"],
        onnx_digest=row["onnx_digest"], signature=json.loads(row["signature"]),
        profile_digest=row["profile_digest"], run_id=row["run_id"], dataset=row["dataset"],
        metrics=json.loads(row["metrics"]), source=row["source"],
        description=row["description"], created_at=row["created_at"],
        created_by=row["created_by"], tags=tags, aliases=aliases,
    )


def output_name(signature: dict[str, Any], role: str) -> str:
    """The output that holds ``role`` (probabilities, label, prediction): a trained model's
    own name for it, or the one an imported model's data recorded."""
    return str((signature.get("roles") or {}).get(role, role))


def _model_id(db: Database, name: str) -> int:
    row = db.execute("SELECT id FROM models WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"model {name} does not exist; see 'appliance models list'")
    return int(row[0])


def resolve(db: Database, ref: str | Ref) -> ModelVersion:
    """``NAME@VERSION``, ``NAME@ALIAS``, or ``NAME``: the production alias when it is
    set, else the latest version."""
    parsed = ref if isinstance(ref, Ref) else parse_ref(ref, "model reference")
    model_id = _model_id(db, parsed.name)
    if parsed.version is not None:
        rows = list(db.query(_SELECT + " WHERE mv.model_id = ? AND mv.version = ?",
                             [model_id, parsed.version]))
        if not rows:
            raise NotFound(f"model {parsed} does not exist; see 'appliance models show "
                           f"{parsed.name}'")
        return _from_row(db, rows[0])
    alias = parsed.alias or DEFAULT_ALIAS
    rows = list(db.query(
        _SELECT + " JOIN aliases a ON a.version_id = mv.id WHERE a.model_id = ? AND a.alias = ?",
        [model_id, alias]))
    if rows:
        return _from_row(db, rows[0])
    if parsed.alias is not None:
        raise NotFound(f"model {parsed.name} has no alias '{alias}'; see 'appliance models "
                       f"show {parsed.name}'")
    rows = list(db.query(_SELECT + " WHERE mv.model_id = ? ORDER BY mv.version DESC LIMIT 1",
                         [model_id]))
    if not rows:
        raise NotFound(f"model {parsed.name} has no versions")
    return _from_row(db, rows[0])


def get_version_by_id(db: Database, version_id: int) -> ModelVersion:
    rows = list(db.query(_SELECT + " WHERE mv.id = ?", [version_id]))
    if not rows:
        raise NotFound(f"model version id {version_id} does not exist")
    return _from_row(db, rows[0])


def insert_version(
    db: Database,
    *,
    name: str,
    onnx_digest: str,
    signature: dict[str, Any],
    actor: str,
    source: str,
    profile_digest: str | None = None,
    run_id: int | None = None,
    dataset_version_id: int | None = None,
    metrics: dict[str, Any] | None = None,
    description: str = "",
) -> ModelVersion:
    """Add the next version of ``name`` in the caller's open transaction, with its audit
    entry; the model is created on its first version."""
    if not db.conn.in_transaction:
        raise RuntimeError("insert_version must run inside the caller's write transaction")
    check_name(name, "model name")
    now = now_iso()
    row = db.execute("SELECT id FROM models WHERE name = ?", [name]).fetchone()
    if row is None:
        cur = db.execute(
            "INSERT INTO models (name, created_at, created_by) VALUES (?, ?, ?)",
            [name, now, actor])
        model_id = int(cur.lastrowid or 0)
        audit.append(db, actor=actor, action="model.create", target=f"model:{name}", details={})
    else:
        model_id = int(row[0])
    version = int(db.execute(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE model_id = ?",
        [model_id]).fetchone()[0])
    cur = db.execute(
        "INSERT INTO model_versions (model_id, version, onnx_digest, signature, profile_digest,"
        " run_id, dataset_version_id, metrics, source, description, created_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [model_id, version, onnx_digest, json.dumps(signature, sort_keys=True), profile_digest,
         run_id, dataset_version_id, json.dumps(metrics or {}, sort_keys=True), source,
         description, now, actor])
    action = "model.version.import" if source == "import" else "model.version.register"
    audit.append(
        db, actor=actor, action=action, target=f"model:{name}@{version}",
        details={"onnx": f"sha256:{onnx_digest}", "run": run_id, "source": source},
    )
    return get_version_by_id(db, int(cur.lastrowid or 0))


def list_models(db: Database) -> list[dict[str, Any]]:
    """One row per model: version count, latest version, aliases and when it last changed."""
    models = list(db.query(
        "SELECT m.id, m.name, m.description, m.created_at, m.created_by,"
        " COUNT(mv.id) AS versions, MAX(mv.version) AS latest, MAX(mv.created_at) AS updated_at"
        " FROM models m LEFT JOIN model_versions mv ON mv.model_id = m.id"
        " GROUP BY m.id ORDER BY m.name"))
    aliases: dict[int, dict[str, int]] = {}
    for r in db.query(
        "SELECT a.model_id, a.alias, mv.version FROM aliases a"
        " JOIN model_versions mv ON mv.id = a.version_id ORDER BY a.alias"
    ):
        aliases.setdefault(r["model_id"], {})[r["alias"]] = r["version"]
    for m in models:
        m["aliases"] = aliases.get(m.pop("id"), {})
    return models


def list_versions(
    db: Database, name: str, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """The versions of one model, newest first, as summary rows (no signature)."""
    model_id = _model_id(db, name)
    sql = (
        "SELECT mv.id, mv.version, mv.onnx_digest, mv.run_id, mv.source, mv.metrics,"
        " mv.created_at, mv.created_by, mv.description FROM model_versions mv"
        " WHERE mv.model_id = ? ORDER BY mv.version DESC"
    )
    params: list[Any] = [model_id]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = list(db.query(sql, params))
    aliases: dict[int, list[str]] = {}
    for r in db.query("SELECT alias, version_id FROM aliases WHERE model_id = ? ORDER BY alias",
                      [model_id]):
        aliases.setdefault(r["version_id"], []).append(r["alias"])
    for r in rows:
        r["metrics"] = json.loads(r["metrics"])
        r["aliases"] = aliases.get(r.pop("id"), [])
    return rows


def model_summary(db: Database, name: str) -> dict[str, Any]:
    row = list(db.query("SELECT * FROM models WHERE name = ?", [name]))
    if not row:
        raise NotFound(f"model {name} does not exist; see 'appliance models list'")
    info = dict(row[0])
    info.pop("id")
    return info


def set_tag(
    db: Database, ref: str, key: str, value: str | None, *, actor: str
) -> ModelVersion:
    """Set a version's tag, or remove it when ``value`` is None."""
    if not key or len(key) > 128 or "=" in key:
        raise BadInput(f"invalid tag key {key!r}: 1-128 characters, no '='")
    with immediate(db):
        mv = resolve(db, ref)
        if value is None:
            db.execute("DELETE FROM model_version_tags WHERE version_id = ? AND key = ?",
                       [mv.id, key])
        else:
            db.execute(
                "INSERT INTO model_version_tags (version_id, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value",
                [mv.id, key, value])
        audit.append(db, actor=actor, action="model.version.tag", target=f"model:{mv.ref}",
                     details={"key": key, "value": value})
        return get_version_by_id(db, mv.id)


def set_description(db: Database, ref: str, text: str, *, actor: str) -> None:
    """Describe a model (``NAME``) or one version (``NAME@VERSION``/``NAME@ALIAS``)."""
    parsed = parse_ref(ref, "model reference")
    with immediate(db):
        if parsed.version is None and parsed.alias is None:
            model_id = _model_id(db, parsed.name)
            db.execute("UPDATE models SET description = ? WHERE id = ?", [text, model_id])
            target = f"model:{parsed.name}"
        else:
            mv = resolve(db, parsed)
            db.execute("UPDATE model_versions SET description = ? WHERE id = ?", [text, mv.id])
            target = f"model:{mv.ref}"
        audit.append(db, actor=actor, action="model.describe", target=target,
                     details={"description": text})
