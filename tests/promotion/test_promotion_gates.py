"""Promotion gates: worse refused, better passes, separation of duties, force, reports, cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.promotion import ADMIN, APPROVER, OPERATOR, TRAINER, copy_home, trained_home

from appliance import promotion, registry
from appliance.cli import main
from appliance.errors import BadInput, Forbidden
from appliance.storage.home import Home


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return trained_home(tmp_path_factory.mktemp("trained") / "home")


@pytest.fixture
def home(trained: Home, tmp_path: Path) -> Home:
    return copy_home(trained, tmp_path / "copy")


def cli(home: Home, *args: str):
    return CliRunner().invoke(main, ["--home", str(home.root), *args])


def production(home: Home) -> int:
    db = home.db()
    try:
        return registry.resolve(db, "buyer@production").version
    finally:
        db.close()


def actions(home: Home) -> list[str]:
    db = home.db()
    try:
        return [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq")]
    finally:
        db.close()


def test_a_candidate_worse_than_production_is_refused(home: Home) -> None:
    promotion.promote(home, "buyer@2", ADMIN)
    r = cli(home, "models", "promote", "buyer@1")
    assert r.exit_code == 1
    assert "metric:accuracy:vs_production" in r.stderr
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("metric:accuracy:vs_production")]
    assert table and table[0].rstrip().endswith("FAIL")
    assert production(home) == 2
    db = home.db()
    try:
        reports = promotion.gate_reports(db, "buyer@1")
    finally:
        db.close()
    assert [r["passed"] for r in reports] == [False]
    evaluation = reports[0]["gates"]["evaluation"]
    # Both scored on the candidate's own held-out rows.
    assert evaluation["candidate"]["accuracy"] < evaluation["production"]["accuracy"]
    assert actions(home)[-1] == "model.promote.refused"


def test_a_better_candidate_passes_is_signed_and_rolls_back(home: Home) -> None:
    first = promotion.promote(home, "buyer@1", ADMIN)
    assert first.report.passed and production(home) == 1
    r = cli(home, "models", "promote", "buyer@2", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["report"]["passed"] and result["move"]["previous"] == 1
    names = {g["gate"] for g in result["report"]["gates"]}
    assert {"metric:accuracy:vs_production", "latency_p99_ms", "signature",
            "onnx_checker_parity", "data_quality:missing_share"} <= names
    assert production(home) == 2
    db = home.db()
    try:
        mv = registry.resolve(db, "buyer@2")
        data = home.blobs.read_bytes(mv.onnx_digest)
        assert promotion.verify_model(db, home.keys_dir, mv, data) is True
    finally:
        db.close()
    assert oct((home.keys_dir / "model-signing.key").stat().st_mode & 0o777) == "0o600"
    tail = actions(home)[-3:]
    assert tail == ["model.version.sign", "model.promote", "model.alias.set"]

    r = cli(home, "models", "rollback", "buyer")
    assert r.exit_code == 0, r.output
    assert production(home) == 1
    assert actions(home)[-2:] == ["model.alias.set", "model.rollback"]
    r = cli(home, "models", "rollback", "buyer")
    assert r.exit_code == 1 and "nothing to roll back" in r.stderr


def test_a_promotion_reason_that_reads_like_a_rollback_does_not_confuse_rollback(
    home: Home,
) -> None:
    promotion.promote(home, "buyer@1", ADMIN)
    promotion.promote(home, "buyer@2", ADMIN, reason="rollback of the v1 feature set")
    assert production(home) == 2
    move = promotion.rollback(home, "buyer", ADMIN)
    assert move.version == 1 and production(home) == 1


def test_approval_by_its_own_trainer_is_refused(home: Home, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gates: {approval: {required: true}}\n")
    assert cli(home, "models", "policy", "buyer", str(policy)).exit_code == 0
    with pytest.raises(promotion.PromotionRefused) as refused:
        promotion.promote(home, "buyer@2", ADMIN)
    assert refused.value.report.failed == ["approval"]
    with pytest.raises(Forbidden, match="trained this version"):
        promotion.approve(home, "buyer@2", TRAINER)
    with pytest.raises(Forbidden, match="models.approve"):
        promotion.approve(home, "buyer@2", OPERATOR)
    promotion.approve(home, "buyer@2", APPROVER, comment="looked at the card")
    result = promotion.promote(home, "buyer@2", ADMIN)
    assert result.report.passed and production(home) == 2
    assert "model.version.approve" in actions(home)


def test_force_needs_admin_and_a_reason_and_is_audited(home: Home) -> None:
    promotion.promote(home, "buyer@2", ADMIN)
    with pytest.raises(Forbidden):
        promotion.promote(home, "buyer@1", OPERATOR, force=True, reason="hotfix")
    with pytest.raises(BadInput, match="--reason"):
        promotion.promote(home, "buyer@1", ADMIN, force=True)
    result = promotion.promote(home, "buyer@1", ADMIN, force=True, reason="known regression")
    assert result.forced and production(home) == 1
    db = home.db()
    try:
        row = db.execute("SELECT entry FROM audit_log WHERE action = 'model.promote.forced'"
                         ).fetchone()
    finally:
        db.close()
    details = json.loads(row[0])["details"]
    assert details["reason"] == "known regression"
    assert "metric:accuracy:vs_production" in details["failed"]


def test_bad_policy_is_refused_naming_the_key(home: Home, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gates: {latency: {max_p99_mss: 3}}\n")
    r = cli(home, "models", "policy", "buyer", str(policy))
    assert r.exit_code == 2 and "gates.latency.max_p99_mss" in r.stderr
    policy.write_text("gates: {metrics: [{metric: accuracy, min: 0.99}]}\n")
    assert cli(home, "models", "policy", "buyer", str(policy)).exit_code == 0
    r = cli(home, "models", "promote", "buyer@2")
    assert r.exit_code == 1 and "metric:accuracy" in r.stderr


def test_a_policy_naming_an_unknown_metric_is_refused_when_set(home: Home,
                                                               tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gates: {metrics: [{metric: auc, min: 0.8}]}\n")
    r = cli(home, "models", "policy", "buyer", str(policy))
    assert r.exit_code == 2 and "'auc' is not a metric" in r.stderr and "roc_auc" in r.stderr
    policy.write_text("gates: {metrics: [{metric: rmse, max: 0.5}]}\n")
    r = cli(home, "models", "policy", "buyer", str(policy))
    assert r.exit_code == 2 and "rmse are not classification metrics" in r.stderr
    policy.write_text("gates: {metrics: [{metric: accuracy}]}\n")
    r = cli(home, "models", "policy", "buyer", str(policy))
    assert r.exit_code == 2 and "needs min, max or max_regression" in r.stderr
    policy.write_text("gates: {metrics: [{metric: roc_auc, min: 0.5}], approvals: {}}\n")
    r = cli(home, "models", "policy", "buyer", str(policy))
    assert r.exit_code == 2 and "gates.approvals" in r.stderr
    assert cli(home, "models", "policy", "buyer", "--json").exit_code == 0
    policy.write_text("gates: {metrics: [{metric: roc_auc, min: 0.5}]}\n")
    assert cli(home, "models", "policy", "buyer", str(policy)).exit_code == 0
    report = promotion.promote(home, "buyer@2", ADMIN).report
    assert report.gates[0].gate == "metric:roc_auc" and report.gates[0].passed


def test_model_card_shows_data_training_gates_and_lineage(home: Home, tmp_path: Path) -> None:
    promotion.promote(home, "buyer@2", ADMIN)
    out = tmp_path / "card.html"
    r = cli(home, "models", "card", "buyer@2", "--html", str(out))
    assert r.exit_code == 0, r.output
    md = r.stdout
    for heading in ("## Data", "## Training", "## Metrics per split", "## Gate reports",
                    "## Approvals", "## Lineage", "## Reproducibility", "## Drift history"):
        assert heading in md
    assert "metric:accuracy:vs_production" in md and "shop@1" in md
    assert "Ed25519 key" in md and "| test | accuracy |" in md
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    assert "Gate reports" in page
