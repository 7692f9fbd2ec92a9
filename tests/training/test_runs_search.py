"""Searching, sorting and comparing runs, and grid sweeps queued as one job per point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.tabular import write_csv

from appliance.config import parse_config
from appliance.errors import BadInput
from appliance.jobs.training import run_train_job
from appliance.queue.context import JobContext
from appliance.training import run_training
from appliance.training.search import parse_where

RUN = {"id": 3, "status": "succeeded", "model": "buyer", "params.lr": 0.002,
       "params.hidden": [8], "test.accuracy": 0.97, "test.log_loss": 0.2, "device": "cpu"}


@pytest.mark.parametrize("text, expected", [
    ("test.accuracy > 0.95 and params.lr = 0.002", True),
    ("test.accuracy > 0.95 and params.lr = 0.003", False),
    ("test.accuracy >= 0.97", True),
    ("test.accuracy < 0.97 or status = succeeded", True),
    ("not (status = failed) and model == 'buyer'", True),
    ("status != succeeded", False),
    ("test.rmse < 1", False),  # a field the run does not have never matches
    ("not test.rmse < 1", True),
    ("params.lr = 2e-3", True),
    ('device = "cpu" and id <= 3', True),
])
def test_where_expressions(text: str, expected: bool) -> None:
    assert parse_where(text)(RUN) is expected


@pytest.mark.parametrize("text, message", [
    ("test.accuracy >", "ends too early"),
    ("(status = failed", "'(' is not closed"),
    ("test.accuracy 0.9", "expected one of = != < <= > >= after 'test.accuracy'"),
    ("status = failed model = x", "unexpected 'model'"),
    ("__import__('os').system('true')", "can not read"),
    ("", "empty"),
])
def test_a_bad_where_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BadInput, match="--where: .*" + message.replace("(", r"\(")):
        parse_where(text)


@pytest.fixture
def shop(runner, tmp_path) -> str:
    r = runner("datasets", "add", "shop", str(write_csv(tmp_path / "shop.csv")), "--target",
               "label")
    assert r.exit_code == 0, r.output
    return "shop@1"


def template(**params: object) -> dict[str, object]:
    return {"name": "buyer", "dataset": "shop@1", "seed": 7,
            "model": {"template": "logistic_regression", "params": {"epochs": 3, **params}}}


def test_runs_list_where_sort_columns_and_compare(runner, home, shop) -> None:
    results = [run_training(home, template(lr=lr), "alice") for lr in (0.002, 0.05, 0.2)]
    accuracy = {r.run_id: r.metrics["test"]["accuracy"] for r in results}
    r = runner("runs", "list", "--sort", "-test.accuracy,id",
               "--columns", "id,params.lr,test.accuracy")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "params.lr", "test.accuracy"]
    listed = [int(line.split()[0]) for line in lines[1:]]
    assert listed == sorted(accuracy, key=lambda i: (-accuracy[i], i))
    r = runner("runs", "list", "--where", "params.lr = 0.05 and status = succeeded", "--json")
    assert [row["id"] for row in json.loads(r.stdout)] == [results[1].run_id]
    r = runner("runs", "list", "--where", "test.accuracy >")
    assert r.exit_code == 2 and "--where: the expression ends too early" in r.output

    r = runner("runs", "compare", "1", "2", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["field"]: row for row in json.loads(r.stdout)}
    assert rows["params.lr"]["values"] == [0.002, 0.05] and rows["params.lr"]["differs"]
    assert rows["code_hash"]["differs"] and not rows["data_hash"]["differs"]
    assert not rows["env_hash"]["differs"] and not rows["params.epochs"]["differs"]
    assert "test.accuracy" in rows
    r = runner("runs", "compare", "1", "3")
    assert r.exit_code == 0, r.output
    marked = {line.split()[1] for line in r.stdout.splitlines() if line.startswith("*")}
    assert {"params.lr", "code_hash", "weights_hash"} <= marked
    assert "data_hash" not in marked and "seed" not in marked
    r = runner("runs", "compare", "1")
    assert r.exit_code == 2 and "at least two runs" in r.output
    r = runner("runs", "compare", "1", "9")
    assert r.exit_code == 2 and "run 9 does not exist" in r.output


def run_queued_train_jobs(home, db) -> list[dict]:
    """Run every queued train job's handler with the parameters the queue holds."""
    results = []
    for row in db.query("SELECT id, params FROM jobs WHERE kind = 'train' ORDER BY id"):
        work = home.root / "jobs" / str(row["id"]) / "work"
        work.mkdir(parents=True, exist_ok=True)
        ctx = JobContext(job_id=row["id"], kind="train", params=json.loads(row["params"]),
                         attempt=1, workdir=work, home=home.root, config=parse_config({}))
        results.append(run_train_job(ctx))
    return results


def test_a_sweep_queues_one_normal_run_per_point_and_lists_them_ranked(runner, home, db, shop,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**template(), "sweep": {"lr": [0.002, 0.2],
                                                            "batch_size": [16, 64]}},
                                   sort_keys=False))
    r = runner("train", str(path))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "sweep 1: 4 points queued as jobs 1, 2, 3, 4"
    points = [json.loads(row["params"])["point"]
              for row in db.query("SELECT params FROM jobs ORDER BY id")]
    assert points == [{"lr": 0.002, "batch_size": 16}, {"lr": 0.002, "batch_size": 64},
                      {"lr": 0.2, "batch_size": 16}, {"lr": 0.2, "batch_size": 64}]
    results = run_queued_train_jobs(home, db)
    run_training(home, template(), "alice")  # not in the sweep
    r = runner("runs", "list", "--sweep", "1", "--sort", "-test.accuracy", "--json")
    ranked = json.loads(r.stdout)
    assert sorted(row["id"] for row in ranked) == sorted(x["run_id"] for x in results)
    accuracies = [row["test.accuracy"] for row in ranked]
    assert accuracies == sorted(accuracies, reverse=True)
    assert {(row["params.lr"], row["params.batch_size"]) for row in ranked} == {
        (p["lr"], p["batch_size"]) for p in points}
    assert all(row["sweep"] == 1 and row["status"] == "succeeded" for row in ranked)


def test_a_sweep_with_one_bad_point_queues_nothing(runner, db, shop, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**template(), "sweep": {"lr": [0.01, -1]}}))
    r = runner("train", str(path))
    assert r.exit_code == 2
    assert "model.params.lr" in r.output
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM sweeps").fetchone()[0] == 0
    path.write_text(yaml.safe_dump({**template(), "sweep": {"lr": []}}))
    r = runner("train", str(path))
    assert r.exit_code == 2 and "recipe field 'sweep.lr' must be a non-empty list" in r.output
