"""The audit page: verification status recorded and shown, checkpoint and export downloads."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import csrf_of

from appliance.audit import standalone_verify


def test_verify_records_and_shows_the_outcome(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    assert "not verified yet" in viewer.get("/audit").get_data(as_text=True)
    assert viewer.get("/api/overview").get_json()["audit"]["at"] is None
    response = viewer.post("/audit/verify", data={"csrf_token": csrf_of(viewer)})
    assert response.status_code == 303
    page = viewer.get("/audit").get_data(as_text=True)
    assert "verified" in page and "by viewer" in page and "FAILED" not in page
    overview = viewer.get("/api/overview").get_json()["audit"]
    assert overview["ok"] is True and overview["actor"] == "viewer"
    entries = viewer.get("/api/audit?action=audit.verify").get_json()["entries"]
    assert [e["actor"] for e in entries] == ["viewer"]
    assert entries[0]["details"]["ok"] is True


def test_verify_reports_a_tampered_log(app: Flask, clients: dict[str, FlaskClient]) -> None:
    db = app.config["APPLIANCE_HOME"].db()
    try:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
        db.conn.commit()
    finally:
        db.close()
    admin = clients["admin"]
    result = admin.post("/api/audit/verify", headers={"X-CSRF-Token": csrf_of(admin)})
    assert result.status_code == 200
    body = result.get_json()
    assert body["ok"] is False and body["first_bad_seq"] == 3
    page = admin.get("/").get_data(as_text=True)
    assert "FAILED" in page


def test_checkpoint_download_is_the_latest_signed_note(app: Flask,
                                                        clients: dict[str, FlaskClient]) -> None:
    response = clients["viewer"].get("/audit/checkpoint")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    db = app.config["APPLIANCE_HOME"].db()
    try:
        latest = db.execute("SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1"
                            ).fetchone()[0]
    finally:
        db.close()
    assert response.get_data(as_text=True) == latest
    assert "\n\u2014 " in latest, "a signed note carries its signature line"


def test_export_bundle_verifies_off_the_box(app: Flask, clients: dict[str, FlaskClient],
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert clients["operator"].get("/audit/export").status_code == 403
    response = clients["admin"].get("/audit/export")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        archive.extractall(tmp_path)
    bundle = tmp_path / "audit-export"
    names = {p.name for p in bundle.iterdir()}
    assert {"entries.jsonl", "checkpoints.json", "proofs.json", "audit.pub",
            "manifest.json"} <= names
    pub = app.config["APPLIANCE_HOME"].keys_dir / "audit.pub"
    code = standalone_verify.main(["--pubkey", str(pub), str(bundle)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True
    assert report["size"] == json.loads((bundle / "manifest.json").read_text())["size"]
