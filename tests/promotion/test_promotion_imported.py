"""Models made elsewhere: the same bytes give back their version; a reference and an
evaluation dataset give them a drift profile and metric gates evaluated here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.promotion import ADMIN
from helpers.tabular import logistic_onnx, write_csv

from appliance import promotion, registry
from appliance.monitoring.check import run_check
from appliance.storage.home import Home

GOOD = (2.0, 1.0, -0.2)   # close to the rule that made the labels
BAD = (-2.0, -1.0, 0.2)   # its opposite


@pytest.fixture
def data(runner, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "shop.csv", rows=400)
    assert runner("datasets", "add", "shop", str(csv), "--target", "label").exit_code == 0
    holdout = write_csv(tmp_path / "holdout.csv", rows=300, seed=1)
    assert runner("datasets", "add", "holdout", str(holdout), "--target", "label").exit_code == 0


def model(tmp_path: Path, weights: tuple[float, float, float], **kw) -> str:
    name = "m" + "_".join(f"{w:g}" for w in weights) + "".join(kw) + ".onnx"
    return str(logistic_onnx(tmp_path / name, *weights, **kw))


def test_the_same_bytes_imported_again_give_back_their_version(runner, tmp_path, db) -> None:
    path = model(tmp_path, GOOD)
    assert runner("models", "import", "m", path).stdout.strip() == "m@1"
    again = runner("models", "import", "m", path)
    assert again.exit_code == 0 and again.stdout.startswith("m@1  (already registered")
    assert [r["version"] for r in registry.list_versions(db, "m")] == [1]
    assert runner("models", "import", "m", model(tmp_path, BAD)).stdout.strip() == "m@2"
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = "
                      "'model.version.import'").fetchone()[0] == 2


def test_import_with_reference_and_eval_scores_the_onnx_file(runner, tmp_path, db,
                                                              data) -> None:
    r = runner("models", "import", "m", model(tmp_path, GOOD), "--reference", "shop@1",
               "--eval", "holdout@1", "--json")
    assert r.exit_code == 0, r.output
    mv = registry.resolve(db, "m@1")
    assert mv.signature["task"] == "classification" and mv.signature["target"] == "label"
    assert mv.signature["classes"] == ["false", "true"]  # yes/no reads as a boolean
    assert mv.dataset == "holdout@1" and mv.profile_digest is not None
    test = mv.metrics["test"]
    assert set(test) >= {"accuracy", "log_loss", "f1_macro", "roc_auc"}
    assert test["accuracy"] > 0.8 and mv.metrics["evaluation"]["rows"] == 300
    assert json.loads(r.stdout)["ref"] == "m@1"
    bad = runner("models", "import", "m", model(tmp_path, BAD), "--eval", "holdout@1")
    assert bad.exit_code == 0
    assert registry.resolve(db, "m@2").metrics["test"]["accuracy"] < 0.3


def test_a_column_the_dataset_lacks_exits_2_naming_it_and_writes_nothing(runner, tmp_path, db,
                                                                         data) -> None:
    path = model(tmp_path, GOOD, inputs=("x1", "income"))
    r = runner("models", "import", "m", path, "--eval", "holdout@1")
    assert r.exit_code == 2
    assert "'income'" in r.stderr and "holdout@1" in r.stderr and "x1, x2" in r.stderr
    assert db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0
    no_target = runner("models", "import", "m", model(tmp_path, GOOD), "--eval", "nosuch@1")
    assert no_target.exit_code == 2 and "nosuch" in no_target.stderr


def test_default_policy_promotes_a_good_import_and_refuses_a_bad_one(
        runner, tmp_path, home: Home, data) -> None:
    for weights in (GOOD, BAD):
        r = runner("models", "import", "m", model(tmp_path, weights), "--reference", "shop@1",
                   "--eval", "holdout@1")
        assert r.exit_code == 0, r.output
    good = promotion.promote(home, "m@1", ADMIN)
    assert good.report.passed, good.report.as_dict()
    assert good.report.evaluation["dataset"] == "holdout@1"
    with pytest.raises(promotion.PromotionRefused) as refused:
        promotion.promote(home, "m@2", ADMIN)
    assert "metric:accuracy:vs_production" in refused.value.report.failed


def test_attach_later_gives_an_existing_version_its_data_once(runner, tmp_path, home, db,
                                                              data) -> None:
    runner("models", "import", "m", model(tmp_path, GOOD))
    with pytest.raises(promotion.PromotionRefused) as refused:
        promotion.promote(home, "m@1", ADMIN)
    assert any("models attach m@1 --eval" in g.detail for g in refused.value.report.gates)
    r = runner("models", "attach", "m@1", "--reference", "shop@1")
    assert r.exit_code == 0, r.output
    r = runner("models", "attach", "m@1", "--eval", "holdout@1")
    assert r.exit_code == 0 and "test on holdout@1: accuracy=" in r.stdout
    mv = registry.resolve(db, "m@1")
    assert mv.signature["reference_dataset"] == "shop@1" and mv.dataset == "holdout@1"
    assert promotion.promote(home, "m@1", ADMIN).report.passed
    other = runner("models", "attach", "m@1", "--reference", "holdout@1")
    assert other.exit_code == 1 and "already has a reference profile" in other.stderr
    nothing = runner("models", "attach", "m@1")
    assert nothing.exit_code == 2 and "--reference" in nothing.stderr
    actions = [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions.count("model.version.attach") == 2


def test_a_model_without_reference_gets_the_checks_that_need_none(runner, tmp_path,
                                                                   home) -> None:
    runner("models", "import", "m", model(tmp_path, GOOD))
    check = run_check(home, "m", record=False)
    assert check.drift is None
    note = " ".join(check.notes)
    assert "data drift" in note and "models attach m@1 --reference DATASET" in note
    r = runner("drift", "report", "m", "--no-record")
    assert r.exit_code == 0, r.output
    assert "models attach m@1 --reference" in r.stdout


def test_a_zipmap_classifier_with_integer_classes_is_evaluated_on_a_boolean_target(
        runner, tmp_path, db, data) -> None:
    r = runner("models", "import", "m", model(tmp_path, GOOD, zipmap=True), "--eval",
               "holdout@1")
    assert r.exit_code == 0, r.output
    mv = registry.resolve(db, "m@1")
    assert mv.signature["classes"] == ["false", "true"]
    assert mv.signature["roles"] == {"probabilities": "probabilities", "label": "label"}
    assert mv.metrics["test"]["accuracy"] > 0.8


def test_drift_of_an_imported_model_is_measured_against_its_reference(
        runner, tmp_path, home, data) -> None:
    import time

    import numpy as np

    from appliance.config import parse_config
    from appliance.serving.requestlog import COLUMNS
    from appliance.storage.db import immediate

    r = runner("models", "import", "m", model(tmp_path, GOOD), "--reference", "shop@1")
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(4)
    now = time.time()
    rows = []
    for i in range(200):
        x1, x2 = float(rng.normal(2.5)), float(rng.normal())  # x1 moved by 2.5 sd
        p = 1 / (1 + np.exp(-(2 * x1 + x2 - 0.2)))
        ts = now - 600 + i
        rows.append((ts, int(ts // 60), "m", 1, "primary", f"r{i}", 200, 1500, 5, 1, 1, None,
                     json.dumps({"x1": [[x1]], "x2": [[x2]]}),
                     json.dumps({"probabilities": [[1 - p, p]], "label": [int(p > 0.5)]})))
    mon = home.monitoring_db()
    with immediate(mon):
        mon.conn.executemany(f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' for _ in COLUMNS)})", rows)
    mon.close()
    check = run_check(home, "m", record=False, config=parse_config({}))
    assert check.drift is not None and check.quality is not None
    drifted = {c.name for c in check.drift.columns if c.drifted}
    assert "x1" in drifted and "x2" not in drifted
    assert check.drift.prediction is not None and check.drift.prediction.name == "label"
    assert not any("no reference data" in n for n in check.notes)
