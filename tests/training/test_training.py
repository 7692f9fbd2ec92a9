"""Training: recipes, the built-in templates end to end, parity, runs and reproduction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from helpers.tabular import write_csv

from appliance import registry
from appliance.config import parse_config
from appliance.errors import BadInput, OperationFailed
from appliance.storage.blobs import BlobStore
from appliance.training import get_run, reproduce_run, run_training


@pytest.fixture
def dataset(runner, tmp_path) -> str:
    r = runner("datasets", "add", "shop", str(write_csv(tmp_path / "shop.csv")), "--target",
               "label")
    assert r.exit_code == 0, r.output
    return "shop@1"


def recipe(tmp_path: Path, **fields) -> Path:
    body = {"name": "buyer", "dataset": "shop@1", "seed": 7,
            "model": {"template": "mlp_classifier", "params": {"epochs": 4, "hidden": [8]}}}
    body.update(fields)
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_train_wait_registers_a_version_with_lineage(runner, tmp_path, dataset, db) -> None:
    r = runner("train", str(recipe(tmp_path)), "--wait")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "run 1"
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")] == ["1/4", "2/4", "3/4",
                                                                          "4/4"]
    assert lines[-1].startswith("registered buyer@1")
    mv = registry.resolve(db, "buyer@1")
    assert mv.run_id == 1 and mv.dataset == "shop@1" and mv.profile_digest
    names = [i["name"] for i in mv.signature["inputs"]]
    assert names == ["x1", "x2", "colour", "member", "price"]  # no timestamp, no target
    types = {i["name"]: i["datatype"] for i in mv.signature["inputs"]}
    assert types == {"x1": "FP32", "x2": "FP32", "colour": "BYTES", "member": "FP32",
                     "price": "FP32"}
    assert mv.signature["classes"] == ["false", "true"]
    assert set(mv.metrics) >= {"train", "validation", "test"}
    assert 0.5 <= mv.metrics["test"]["accuracy"] <= 1.0
    run = get_run(db, 1)
    assert run.status == "succeeded" and run.dataset_digest and run.code_hash
    assert run.environment["packages"]["torch"] and run.seed == 7 and run.device == "cpu"
    log = BlobStore(runner.home / "blobs").read_bytes(run.log_digest or "").decode()
    assert "event=epoch epoch=4" in log and "event=parity" in log
    actions = [r["action"] for r in db.query("SELECT action FROM audit_log ORDER BY seq")]
    assert actions[-4:] == ["run.start", "run.record", "model.create", "model.version.register"]
    shown = json.loads(runner("models", "show", "buyer@1", "--json").stdout)
    assert shown["run"]["dataset"] == "shop@1"
    assert "succeeded" in runner("runs", "show", "1").stdout


def test_exported_model_takes_raw_columns(home, db, dataset, tmp_path) -> None:
    result = run_training(home, recipe(tmp_path), "t")
    mv = registry.resolve(db, result.model_version)
    session = ort.InferenceSession(home.blobs.read_bytes(mv.onnx_digest),
                                   providers=["CPUExecutionProvider"])
    feeds = {"x1": np.array([[0.5], [np.nan]], dtype=np.float32),
             "x2": np.array([[1.0], [0.0]], dtype=np.float32),
             "colour": np.array([["red"], ["never-seen"]], dtype=object),
             "member": np.array([[1.0], [0.0]], dtype=np.float32),
             "price": np.array([[3.0], [np.nan]], dtype=np.float32)}
    probabilities, label = session.run(["probabilities", "label"], feeds)
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert list(label) == list(probabilities.argmax(axis=1))


@pytest.mark.parametrize(
    ("template", "target", "params"),
    [
        ("logistic_regression", "label", {"epochs": 3}),
        ("linear_regression", "price", {"epochs": 3}),
        ("mlp_classifier", "label", {"epochs": 3, "hidden": [8, 4]}),
        ("mlp_regressor", "price", {"epochs": 3, "hidden": [8]}),
    ],
)
def test_every_template_reproduces_identically(home, dataset, tmp_path, template, target, params):
    path = recipe(tmp_path, name=f"m-{template.replace('_', '-')}", target=target,
                  model={"template": template, "params": params})
    result = run_training(home, path, "t")
    again = reproduce_run(home, result.run_id, "t")
    assert again.verdict == "identical", again.differences
    assert again.weights_equal and again.differences == []
    if target == "price":
        assert set(result.metrics["test"]) == {"rmse", "mae", "r2"}


def test_reproduce_cli_and_a_different_seed_gives_different_weights(runner, home, dataset,
                                                                    tmp_path) -> None:
    first = run_training(home, recipe(tmp_path), "t")
    other = run_training(home, recipe(tmp_path, seed=8), "t")
    assert first.weights_digest != other.weights_digest
    r = runner("runs", "reproduce", str(first.run_id))
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == "identical"


def test_a_nondeterministic_script_is_not_reproducible(runner, home, dataset, tmp_path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import argparse, json, os\n"
        "import onnx\n"
        "from onnx import TensorProto, helper\n"
        "p = argparse.ArgumentParser()\n"
        "for a in ('--data', '--params', '--run', '--output'): p.add_argument(a)\n"
        "args = p.parse_args()\n"
        "params = json.load(open(args.params))\n"
        "run = json.load(open(args.run))\n"
        "rows = sum(1 for _ in open(args.data)) - 1\n"
        "scale = float(int.from_bytes(os.urandom(4), 'big'))\n"
        "x = helper.make_tensor_value_info('x1', TensorProto.FLOAT, ['n', 1])\n"
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, ['n', 1])\n"
        "w = helper.make_tensor('w', TensorProto.FLOAT, [1], [scale])\n"
        "g = helper.make_graph([helper.make_node('Mul', ['x1', 'w'], ['y'])], 'g', [x], [y], [w])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)])\n"
        "m.ir_version = 8\n"
        "onnx.save(m, os.path.join(args.output, 'model.onnx'))\n"
        "line = {'step': 0, 'score': scale, 'data_rows': rows, 'seed': run['seed'],"
        " 'k': params['k']}\n"
        "open(os.path.join(args.output, 'metrics.jsonl'), 'w').write(json.dumps(line))\n"
    )
    path = recipe(tmp_path, model=None, script="train.py", params={"k": 1})
    r = runner("train", str(path), "--wait", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    logged = done["metrics"]["script"]
    assert logged["data_rows"] == 240 and logged["seed"] == 7 and logged["k"] == 1
    r = runner("runs", "reproduce", str(done["run_id"]), "--json")
    assert r.exit_code == 1
    verdict = json.loads(r.stdout)
    assert verdict["verdict"] == "not reproducible"
    assert any(d.startswith("weights") for d in verdict["differences"])


def test_a_parity_failure_fails_the_run_and_says_by_how_much(home, db, dataset, tmp_path):
    config = parse_config({"training": {"parity_tolerance": 0.0}})
    path = recipe(tmp_path, target="price", name="p",
                  model={"template": "mlp_regressor", "params": {"epochs": 2}})
    with pytest.raises(OperationFailed, match=r"parity check failed: .* differs from torch by "):
        run_training(home, path, "t", config=config)
    run = get_run(db, 1)
    assert run.status == "failed" and "parity" in (run.error or "")
    assert db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'run.fail'").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": {"template": "forest"}}, "'model.template'"),
        ({"model": {"template": "mlp_classifier", "params": {"epochz": 3}}}, "unknown ['epochz']"),
        ({"split": {"train": 0.5, "validation": 0.1, "test": 0.1}}, "add up to 0.7"),
        ({"device": "tpu"}, "'device'"),
        ({"features": ["x1", "nope"]}, "column 'nope' is not in the dataset"),
        ({"features": ["day"]}, "'day' is a timestamp column"),
        ({"dataset": "shop@9"}, "dataset shop@9 does not exist"),
        ({"metrics": ["rmse"]}, "are not classification metrics"),
        ({"colour": "blue"}, "unknown fields ['colour']"),
        ({"split": {"train": float("nan"), "validation": 0.15, "test": 0.15}},
         "'split.train': nan is not a finite number"),
        ({"model": {"template": "mlp_classifier", "params": {"lr": float("inf")}}},
         "'model.params.lr': inf is not a finite number"),
    ],
)
def test_bad_recipes_exit_2_naming_the_field(runner, dataset, tmp_path, db, fields, message):
    r = runner("train", str(recipe(tmp_path, **fields)), "--wait")
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_regression_needs_a_numeric_target(home, dataset, tmp_path) -> None:
    path = recipe(tmp_path, target="colour",
                  model={"template": "linear_regression", "params": {"epochs": 1}})
    with pytest.raises(BadInput, match="needs a numeric target"):
        run_training(home, path, "t")


def test_a_feature_with_no_values_is_named(runner, home, tmp_path) -> None:
    src = write_csv(tmp_path / "src.csv").read_text().splitlines()
    lines = [src[0] + ",note"] + [line + "," for line in src[1:]]
    (tmp_path / "empty.csv").write_text("\n".join(lines) + "\n")
    assert runner("datasets", "add", "blank", str(tmp_path / "empty.csv"), "--target",
                  "label").exit_code == 0
    path = recipe(tmp_path, dataset="blank@1", features=["x1", "note"])
    with pytest.raises(BadInput, match="'note' has no values in the training split"):
        run_training(home, path, "t")


def test_train_help_is_fast_to_import() -> None:
    import subprocess
    import sys

    code = "import sys, appliance.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
