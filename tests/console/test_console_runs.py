"""The Runs pages: the list with search, one run's curves and artifacts, runs compared."""

from __future__ import annotations

from flask.testing import FlaskClient

from appliance.storage.home import Home
from appliance.training import run_training


def test_runs_pages(console_home: Home, clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    for lr in (0.01, 0.2):
        run_training(console_home, {
            "name": "churn", "dataset": "customers@1", "seed": 1,
            "model": {"template": "logistic_regression", "params": {"epochs": 3, "lr": lr}}},
            "test")
    page = viewer.get("/runs?sort=-params.lr")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "params.lr" in text and "test.accuracy" in text
    assert text.index('href="/runs/3"') < text.index('href="/runs/2"')  # lr 0.2 first
    assert 'href="/models/churn/4"' in text  # the version each run produced
    page = viewer.get("/runs?where=params.lr+%3D+0.01")
    text = page.get_data(as_text=True)
    assert 'href="/runs/2"' in text and 'href="/runs/3"' not in text
    assert viewer.get("/runs?where=params.lr+%3D").status_code == 400

    text = viewer.get("/runs/2").get_data(as_text=True)
    assert "<svg" in text and ">loss<" in text and ">val_loss<" in text
    assert 'href="/models/churn/3"' in text and "appliance runs reproduce 2" in text
    text = viewer.get("/models/churn/3").get_data(as_text=True)
    assert 'href="/runs/2"' in text

    text = viewer.get("/runs/1").get_data(as_text=True)
    assert 'href="/runs/1/artifacts/notes.txt"' in text
    download = viewer.get("/runs/1/artifacts/notes.txt")
    assert download.status_code == 200 and download.data == b"seeded\n"
    assert "attachment" in download.headers["Content-Disposition"]
    assert viewer.get("/runs/1/artifacts/other.txt").status_code == 404

    text = viewer.get("/runs/compare?run=2&run=3").get_data(as_text=True)
    assert "* params.lr" in text and "* code_hash" in text
    assert "* data_hash" not in text and "data_hash" in text
    api = viewer.get("/api/runs/2").get_json()
    assert [s for s, _v in api["steps"]["loss"]] == [1, 2, 3]
    assert [r["id"] for r in viewer.get("/api/runs?sort=id").get_json()["runs"]] == [1, 2, 3]


def test_the_runs_list_shows_each_runs_latest_reproduce_verdict(
        console_home: Home, clients: dict[str, FlaskClient]) -> None:
    from appliance.config import parse_config
    from appliance.training import reproduce_run

    run_training(console_home, {
        "name": "churn", "dataset": "customers@1", "seed": 1,
        "model": {"template": "logistic_regression", "params": {"epochs": 2}}}, "test")
    viewer = clients["viewer"]
    row = _row(viewer.get("/runs").get_data(as_text=True), 2)
    assert "not yet" in row
    verdict = reproduce_run(console_home, 2, "test", config=parse_config({})).verdict
    row = _row(viewer.get("/runs").get_data(as_text=True), 2)
    assert f"<td>{verdict}</td>" in row and "not yet" not in row


def _row(page: str, run_id: int) -> str:
    start = page.index(f'href="/runs/{run_id}"')
    return page[start:page.index("</tr>", start)]
