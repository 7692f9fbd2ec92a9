"""The audit log: filter entries; verify it and see when it last was; download the
current signed checkpoint and a verifiable export bundle."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.wrappers import Response

from appliance.audit import checkpoints, export, service
from appliance.console import security, web
from appliance.console.apidoc import api
from appliance.console.security import requires
from appliance.errors import NotFound
from appliance.storage.db import Database

bp = Blueprint("audit", __name__)
READ = "audit.read"  # read and verify the log, download a signed checkpoint
EXPORT = "audit.write"  # the bundle of every entry: admins, as auth's table intends
FILTERS = ("actor", "action", "target")


def entries(db: Database, filters: dict[str, str], since: str, before: int | None,
            limit: int) -> list[dict[str, Any]]:
    """Newest first; ``action`` and ``target`` match a prefix (``model.`` finds every model
    action), ``actor`` matches exactly."""
    where: list[str] = []
    args: list[Any] = []
    for key, value in filters.items():
        if not value:
            continue
        if key == "actor":
            where.append("actor = ?")
            args.append(value)
        else:
            where.append(f"{key} >= ? AND {key} < ?")
            args.extend([value, value + "\U0010ffff"])
    if since:
        where.append("ts >= ?")
        args.append(since)
    if before is not None:
        where.append("seq < ?")
        args.append(before)
    sql = "SELECT seq, ts, actor, action, target, entry FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = []
    for r in db.query(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit]):
        entry = bytes(r.pop("entry"))
        r["details"] = json.loads(entry).get("details", {})
        rows.append(r)
    return rows


def verify_and_record(db: Database, actor: str) -> dict[str, Any]:
    """Verify the log now and record who did and what they found (the audit service's)."""
    return service.verify_and_record(db, actor)


def last_verification(db: Database) -> dict[str, Any] | None:
    """The newest recorded verification of the log, if any."""
    return service.last_verification(db)


def _query() -> tuple[dict[str, str], str, int | None, int]:
    filters = {k: (request.args.get(k) or "").strip() for k in FILTERS}
    since = (request.args.get("since") or "").strip()
    since = service.parse_since(since) if since else ""
    before = web.int_arg("before", 0, low=0, high=2**62) or None
    limit = web.int_arg("limit", 100, low=1, high=1000)
    return filters, since, before, limit


@bp.get("/audit")
@requires(READ)
def index() -> str:
    filters, since, before, limit = _query()
    db = web.get_db()
    return render_template("audit.html", entries=entries(db, filters, since, before, limit),
                           filters=filters, since=since, limit=limit,
                           verification=last_verification(db))


@bp.get("/api/audit")
@requires(READ)
@api(returns="{entries: [{seq, ts, actor, action, target, details}], verification}")
def api_audit() -> Response:
    """Audit entries newest first (query: actor, action, target, since, before, limit)."""
    filters, since, before, limit = _query()
    db = web.get_db()
    return jsonify({"entries": entries(db, filters, since, before, limit),
                    "verification": last_verification(db)})


@bp.post("/audit/verify")
@requires(READ)
def verify_form() -> Response:
    verify_and_record(web.get_db(), security.actor())
    return redirect(url_for("audit.index"), 303)


@bp.post("/api/audit/verify")
@requires(READ)
@api(returns="{at, ok, size, first_bad_seq, reason, checkpoints, signed_size, root}")
def api_verify() -> Response:
    """Verify every hash, link, root and signature of the log now, and record the outcome."""
    return jsonify(verify_and_record(web.get_db(), security.actor()))


@bp.get("/audit/checkpoint")
@requires(READ)
def checkpoint_download() -> Response:
    """The latest signed checkpoint (a signed note), to keep off the box as an anchor."""
    latest = checkpoints.latest_checkpoint(web.get_db())
    if latest is None:
        raise NotFound("no checkpoint is signed yet; run 'appliance audit checkpoint'")
    size, note = latest
    return send_file(io.BytesIO(note.encode("utf-8")), mimetype="text/plain",
                     as_attachment=True, download_name=f"audit-checkpoint-{size}.txt")


@bp.get("/audit/export")
@requires(EXPORT)
def export_download() -> Response:
    """The export bundle (entries, checkpoints, proofs, key, manifest) as one zip file,
    checked off the box with ``standalone_verify.py`` and the public key."""
    with tempfile.TemporaryDirectory(prefix="audit-export-") as tmp:
        out = Path(tmp) / "bundle"
        manifest = export.export(web.get_db(), out)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.iterdir()):
                archive.write(path, f"audit-export/{path.name}")
    buffer.seek(0)
    return send_file(buffer, mimetype="application/zip", as_attachment=True,
                     download_name=f"audit-export-{manifest['size']}.zip")
