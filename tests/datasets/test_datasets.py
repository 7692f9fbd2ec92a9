"""Datasets: registering versions, refusing bad files, and the reference profile."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers.tabular import write_csv

from appliance.datasets import add_dataset, get_dataset_version, load_profile, load_table
from appliance.errors import BadInput


def audit_actions(db) -> list[str]:
    return [r["action"] for r in db.query("SELECT action FROM audit_log ORDER BY seq")]


def test_add_prints_versions_and_same_bytes_give_same_version(runner, tmp_path, db) -> None:
    first = write_csv(tmp_path / "a.csv")
    second = write_csv(tmp_path / "b.csv", seed=1)
    r = runner("datasets", "add", "churn", str(first), "--target", "label")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "churn@1"
    r = runner("datasets", "add", "churn", str(second), "--target", "label")
    assert r.stdout.strip() == "churn@2"
    copy = tmp_path / "copy.csv"
    copy.write_bytes(first.read_bytes())
    r = runner("datasets", "add", "churn", str(copy), "--target", "label")
    assert r.exit_code == 0 and r.stdout.strip() == "churn@1"
    assert audit_actions(db).count("dataset.register") == 2
    listed = json.loads(runner("datasets", "list", "--json").stdout)
    assert [(d["name"], d["latest"], d["versions"], d["latest_rows"]) for d in listed] == [
        ("churn", 2, 2, 240)]


def test_show_reports_schema_types_and_profile(runner, tmp_path) -> None:
    runner("datasets", "add", "d", str(write_csv(tmp_path / "a.csv")), "--target", "label")
    shown = json.loads(runner("datasets", "show", "d@1", "--json").stdout)
    types = {c["name"]: c["type"] for c in shown["schema"]}
    assert types == {"x1": "numeric", "x2": "numeric", "colour": "categorical",
                     "member": "boolean", "day": "timestamp", "label": "boolean",
                     "price": "numeric"}
    assert shown["target"] == "label" and shown["row_count"] == 240
    x2 = shown["profile"]["columns"]["x2"]
    assert x2["missing"] == 6 and x2["count"] == 234
    assert abs(x2["missing_share"] - 6 / 240) < 1e-12
    text = runner("datasets", "show", "d").stdout
    assert "d@1" in text and "colour" in text and "categorical" in text


def test_numeric_profile_bins_rebuild_the_distribution(home, db, tmp_path) -> None:
    path = tmp_path / "big.csv"
    rng = np.random.default_rng(3)
    values = rng.normal(10, 2, size=3000)
    path.write_text("v,c\n" + "".join(f"{v:.6f},{'abc'[i % 3] if i % 10 else 'z'}\n"
                                      for i, v in enumerate(values)))
    dv, _ = add_dataset(db, home.blobs, "big", path, actor="t", profile_bins=1000, profile_top_k=2)
    col = load_profile(home.blobs, dv)["columns"]["v"]
    edges, counts = np.array(col["bins"]["edges"]), np.array(col["bins"]["counts"])
    assert len(edges) == 1001 and len(counts) == 1000 and np.all(np.diff(edges) > 0)
    assert counts.sum() == 3000
    assert edges[0] == col["min"] and edges[-1] == col["max"]
    parsed = np.array([float(f"{v:.6f}") for v in values])
    assert abs(col["mean"] - parsed.mean()) < 1e-9 and abs(col["std"] - parsed.std()) < 1e-9
    # The bins hold the data: the median edge splits the counts in half.
    assert abs(counts[:500].sum() - 1500) <= 1
    cat = load_profile(home.blobs, dv)["columns"]["c"]
    assert len(cat["categories"]) == 2 and cat["unique"] == 4
    assert sum(cat["categories"].values()) + cat["other"] == 3000


def test_a_constant_column_has_one_bin(home, db, tmp_path) -> None:
    path = tmp_path / "k.csv"
    path.write_text("k,v\n" + "5,1\n" * 5 + "5,2\n")
    dv, _ = add_dataset(db, home.blobs, "k", path, actor="t")
    assert load_profile(home.blobs, dv)["columns"]["k"]["bins"] == {"edges": [5.0, 5.0],
                                                                     "counts": [6]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n3\n", "line 3: 1 fields, but the header has 2"),
        ("", "the file is empty"),
        ("a,b\n", "header but no rows"),
        ("a,a\n1,2\n", "column 'a' appears twice"),
    ],
)
def test_malformed_files_exit_2_and_register_nothing(runner, tmp_path, db, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    r = runner("datasets", "add", "bad", str(path))
    assert r.exit_code == 2
    assert message in r.stderr
    assert db.execute("SELECT COUNT(*) FROM dataset_versions").fetchone()[0] == 0
    assert "dataset.register" not in audit_actions(db)


def test_a_word_in_a_numeric_column_names_line_and_column(runner, tmp_path, db) -> None:
    path = tmp_path / "late.csv"
    rows = [f"{i},{i * 2}" for i in range(30)]
    rows[24] = "24,oops"
    path.write_text("id,amount\n" + "\n".join(rows) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("datasets:\n  infer_rows: 10\n")
    r = runner("--config", str(config), "datasets", "add", "late", str(path))
    assert r.exit_code == 2
    assert "line 26, column 'amount'" in r.stderr and "'oops' is not a number" in r.stderr
    assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0


def test_missing_target_and_oversized_file(runner, tmp_path) -> None:
    path = write_csv(tmp_path / "a.csv")
    r = runner("datasets", "add", "d", str(path), "--target", "nope")
    assert r.exit_code == 2 and "target column 'nope' is not in the header" in r.stderr
    big = tmp_path / "big.csv"
    big.write_text("a\n" + "1\n" * 600_000)
    config = tmp_path / "c.yaml"
    config.write_text("datasets.max_file_mb: 1\n")
    r = runner("--config", str(config), "datasets", "add", "d", str(big))
    assert r.exit_code == 2 and "over the limit of 1 MiB" in r.stderr


def test_table_reads_back_from_its_blob(home, db, tmp_path) -> None:
    dv, _ = add_dataset(db, home.blobs, "d", write_csv(tmp_path / "a.csv"), actor="t")
    table = load_table(home.blobs, get_dataset_version(db, "d@1"))
    assert table.row_count == 240 and table.types["day"] == "timestamp"
    assert np.isnan(table.columns["x2"][7]) and table.columns["colour"][0] in ("red", "green", "blue")
    with pytest.raises(BadInput, match="datasets have versions, not aliases"):
        get_dataset_version(db, "d@latest")
    assert dv.ref == "d@1"


def test_bad_names_are_refused(runner, tmp_path) -> None:
    r = runner("datasets", "add", "bad@name", str(write_csv(tmp_path / "a.csv")))
    assert r.exit_code == 2 and "invalid dataset name" in r.stderr
    r = runner("datasets", "show", "nothing@1")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_datasets_need_an_initialised_home(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from appliance.cli import main

    r = CliRunner().invoke(main, ["--home", str(tmp_path / "nowhere"), "datasets", "list"])
    assert r.exit_code == 2 and "appliance" in r.stderr and "init" in r.stderr


def test_paths_that_are_not_regular_files_exit_2_naming_them(runner, tmp_path, db) -> None:
    path = write_csv(tmp_path / "a.csv")
    r = runner("datasets", "add", "d", str(path / "x"))  # a file used as a directory
    assert r.exit_code == 2 and f"{path / 'x'}: can not be read" in r.stderr, r.output
    fifo = tmp_path / "p.csv"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    r = runner("datasets", "add", "d", str(fifo))
    assert r.exit_code == 2 and f"{fifo} is not a regular file" in r.stderr, r.output
    assert db.execute("SELECT COUNT(*) FROM datasets").fetchone()[0] == 0
