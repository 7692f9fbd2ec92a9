"""Retraining policy: an alert becomes a retrain job; the handler trains a new version on the
original data plus labelled production data and hands it to promotion; drift-check job."""

from __future__ import annotations

import json
import time

import pytest
from helpers.monitoring import CONFIG, features, log_requests, train_served_model, truth

from appliance import registry
from appliance.datasets import get_dataset_version
from appliance.errors import BadInput
from appliance.jobs.drift import check_model, run_drift_check_job, validate_drift_check_params
from appliance.jobs.training import run_retrain_job, validate_retrain_params
from appliance.monitoring import Window, list_alerts
from appliance.queue.context import JobContext
from appliance.queue.jobs import get_job


def _ctx(home, job, tmp_path) -> JobContext:
    work = tmp_path / f"job{job.id}" / "work"
    work.mkdir(parents=True)
    return JobContext(job_id=job.id, kind=job.kind, params=job.params, attempt=1, workdir=work,
                      home=home.root, config=CONFIG)


def test_policy_is_off_by_default_and_validated(home, tmp_path, runner) -> None:
    train_served_model(home, tmp_path)
    shown = json.loads(runner("monitoring", "policy", "buyer", "--json").stdout)
    assert shown["enabled"] is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("enabled: true\napproval: maybe\n")
    r = runner("monitoring", "policy", "buyer", str(bad))
    assert r.exit_code == 2 and "approval" in r.stderr
    bad.write_text("enabled: true\nwhen: [data_drift]\n")
    r = runner("monitoring", "policy", "buyer", str(bad))
    assert r.exit_code == 2 and "unknown key 'when'" in r.stderr
    with pytest.raises(BadInput, match="model"):
        validate_retrain_params({})
    with pytest.raises(BadInput, match="window_minutes"):
        validate_drift_check_params({"window_minutes": 0})


def test_alert_turns_into_retrain_job_that_builds_a_new_version(home, tmp_path, runner) -> None:
    mv = train_served_model(home, tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text("enabled: true\ntriggers: [data_drift, performance]\napproval: none\n"
                      "promote_to: shadow\nrecent_days: 1\n")
    assert runner("monitoring", "policy", "buyer", str(policy)).exit_code == 0
    f = features(300, 31, x1_shift=1.0, colours=("red",))
    ids = log_requests(home, mv, f, start=time.time() - 600, prefix="p")
    labels = truth(f)
    (tmp_path / "fb.csv").write_text("request_id,label\n" + "".join(
        f"{i},{lab}\n" for i, lab in zip(ids, labels, strict=True)))
    assert runner("feedback", "add", "buyer", str(tmp_path / "fb.csv")).exit_code == 0

    check = check_model(home, "buyer", window=Window.last(30), config=CONFIG, actor="monitor")
    assert "data_drift" in {b.kind for b in check.breaches}
    assert len(check.retrain_jobs) == 1  # one job for the model, however many alerts
    again = check_model(home, "buyer", window=Window.last(30), config=CONFIG, actor="monitor")
    assert again.retrain_jobs == [] and again.new_alerts == []

    db = home.db()
    job = get_job(db, check.retrain_jobs[0])
    assert job.kind == "retrain" and job.params["model"] == "buyer"
    alert = [a for a in list_alerts(db) if a.retrain_job_id == job.id]
    assert len(alert) == 1 and job.params["alert_id"] == alert[0].id
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'alert.retrain'"
                      ).fetchone()[0] == 1
    db.close()

    result = run_retrain_job(_ctx(home, job, tmp_path))
    assert result["candidate"] == "buyer@2" and result["production_rows"] == 300
    assert result["promotion"]["state"] in ("promoted", "refused"), result
    db = home.db()
    new = registry.resolve(db, "buyer@2")
    assert new.dataset == "shop@2"
    dv = get_dataset_version(db, "shop@2")
    assert dv.row_count == 400 + 300 and dv.target == "label"
    reports = db.execute("SELECT COUNT(*) FROM gate_reports WHERE version_id = ?",
                         [new.id]).fetchone()[0]
    assert reports == 1  # the candidate went through the promotion gates
    assert ("shadow" in new.aliases) == (result["promotion"]["state"] == "promoted")
    assert registry.resolve(db, "buyer").version == 1  # production untouched until rollout
    db.close()


def test_retrain_since_the_alert_without_the_original_data(home, tmp_path, runner) -> None:
    mv = train_served_model(home, tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text("enabled: true\ntriggers: [data_drift]\napproval: required\n"
                      "production_since: alert\ninclude_original: false\n")
    assert runner("monitoring", "policy", "buyer", str(policy)).exit_code == 0
    # Old labelled traffic, an hour ago, before the window the alert comes from.
    old = features(150, 41)
    old_ids = log_requests(home, mv, old, start=time.time() - 3600, prefix="old")
    f = features(300, 31, x1_shift=1.0, colours=("red",))
    ids = log_requests(home, mv, f, start=time.time() - 600, prefix="p")
    rows = zip([*old_ids, *ids], [*truth(old), *truth(f)], strict=True)
    (tmp_path / "fb.csv").write_text("request_id,label\n" + "".join(
        f"{i},{lab}\n" for i, lab in rows))
    assert runner("feedback", "add", "buyer", str(tmp_path / "fb.csv")).exit_code == 0
    check = check_model(home, "buyer", window=Window.last(30), config=CONFIG, actor="monitor")
    assert len(check.retrain_jobs) == 1
    # Before the job runs, a check over a window reaching back to the old traffic sees the
    # same breach and moves the alert on to its own window: the job keeps the first.
    wider = check_model(home, "buyer", window=Window(time.time() - 4000, time.time()),
                        config=CONFIG, actor="monitor")
    assert wider.retrain_jobs == [] and "data_drift" in {b.kind for b in wider.breaches}
    db = home.db()
    job = get_job(db, check.retrain_jobs[0])
    db.close()
    assert job.params["since"] > time.time() - 2000  # the first check's 30 minutes
    result = run_retrain_job(_ctx(home, job, tmp_path))
    assert result["production_rows"] == 300  # only what came since the alert's window began
    assert result["promotion"]["state"] == "awaiting approval"
    db = home.db()
    dv = get_dataset_version(db, result["dataset"])
    db.close()
    assert dv.row_count == 300  # and none of the original training rows
    bad = tmp_path / "bad.yaml"
    bad.write_text("production_since: yesterday\n")
    r = runner("monitoring", "policy", "buyer", str(bad))
    assert r.exit_code == 2 and "production_since" in r.stderr
    bad.write_text("include_original: maybe\n")
    r = runner("monitoring", "policy", "buyer", str(bad))
    assert r.exit_code == 2 and "include_original" in r.stderr


def test_drift_check_job_stores_history_for_every_served_model(home, tmp_path) -> None:
    mv = train_served_model(home, tmp_path)
    log_requests(home, mv, features(120, 41), start=time.time() - 300, prefix="d")
    ctx = JobContext(job_id=7, kind="drift-check", params={"window_minutes": 30}, attempt=1,
                     workdir=tmp_path, home=home.root, config=CONFIG)
    result = run_drift_check_job(ctx)
    assert [r["model"] for r in result["checked"]] == ["buyer"] and result["failed"] == []
    mon = home.monitoring_db()
    rows = list(mon.query("SELECT model, sampled_rows, actor FROM checks"))
    mon.close()
    assert rows == [{"model": "buyer", "sampled_rows": 120, "actor": "job:7"}]
