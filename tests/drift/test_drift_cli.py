"""``appliance drift check``: exit codes, text, JSON and the self-contained HTML report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CATS = ["red", "green", "blue"]


def _write(path: Path, n: int, shift: float, seed: int, shares: list[float]) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["age", "income", "colour", "score"])
        for _ in range(n):
            out.writerow([f"{rng.normal(40 + 10 * shift, 10):.3f}", f"{rng.normal(5, 1):.4f}",
                          rng.choice(CATS, p=shares), f"{rng.random():.4f}"])
    return path


def test_no_drift_exits_0(runner, tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.csv", 2000, 0.0, 1, [0.5, 0.3, 0.2])
    cur = _write(tmp_path / "cur.csv", 1500, 0.0, 2, [0.5, 0.3, 0.2])
    result = runner("drift", "check", str(ref), str(cur))
    assert result.exit_code == 0, result.output
    assert "dataset drift: no" in result.output
    assert "age" in result.output and "colour" in result.output


def test_drift_exits_1_with_json_and_html(runner, tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.csv", 2000, 0.0, 1, [0.5, 0.3, 0.2])
    cur = _write(tmp_path / "cur.csv", 1500, 1.0, 2, [0.2, 0.3, 0.5])
    html = tmp_path / "report.html"
    result = runner("drift", "check", str(ref), str(cur), "--json", "--html", str(html),
                    "--target", "score")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    by_name = {c["name"]: c for c in report["columns"]}
    assert report["dataset_drift"] is True
    assert by_name["age"]["drifted"] and by_name["colour"]["drifted"]
    assert not by_name["income"]["drifted"]
    assert by_name["score"]["role"] == "prediction" and report["features"] == 3
    assert by_name["age"]["stats"]["ks_pvalue"] < 1e-10
    page = html.read_text()
    assert page.count("<svg") == 4
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "age" in page and "DRIFT" in page


def test_evidently_mode(runner, tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.csv", 800, 0.0, 1, [0.5, 0.3, 0.2])
    cur = _write(tmp_path / "cur.csv", 800, 0.0, 2, [0.5, 0.3, 0.2])
    result = runner("drift", "check", str(ref), str(cur), "--mode", "evidently", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["mode"] == "evidently" and report["share_threshold"] == 0.5
    assert {c["test"] for c in report["columns"]} == {"ks", "chi2"}


def test_bad_input_exits_2(runner, tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref.csv", 50, 0.0, 1, [0.5, 0.3, 0.2])
    missing = runner("drift", "check", str(ref), str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    other = tmp_path / "other.csv"
    other.write_text("age,height\n1,2\n")
    schema = runner("drift", "check", str(ref), str(other))
    assert schema.exit_code == 2 and "schema" in schema.output
    bad = tmp_path / "bad.csv"
    bad.write_text("age,income,colour,score\n40,abc,red,0.5\n")
    typed = runner("drift", "check", str(ref), str(bad))
    assert typed.exit_code == 2 and "income" in typed.output
    target = runner("drift", "check", str(ref), str(ref), "--target", "nope")
    assert target.exit_code == 2 and "--target" in target.output
