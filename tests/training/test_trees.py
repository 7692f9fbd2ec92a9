"""The gradient-boosted tree templates: training, the ONNX export and its splits, parity,
reproduction, the class labels a served classifier publishes, and the drift, quality and
capacity checks that read a tree model as they read any other."""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from helpers.promotion import registry_server
from helpers.serving import call
from helpers.tabular import write_csv

from appliance import registry
from appliance.config import parse_config
from appliance.errors import OperationFailed
from appliance.registry import set_alias
from appliance.training import get_run, reproduce_run, run_steps, run_training
from appliance.training.features import Encoding, Feature
from appliance.training.trees import estimator, export_trees


@pytest.fixture
def dataset(runner, tmp_path) -> str:
    r = runner("datasets", "add", "shop", str(write_csv(tmp_path / "shop.csv")), "--target",
               "label")
    assert r.exit_code == 0, r.output
    return "shop@1"


def recipe(tmp_path: Path, **fields) -> Path:
    body = {"name": "trees", "dataset": "shop@1", "seed": 7,
            "model": {"template": "gbt_classifier", "params": {"max_iter": 20}}}
    body.update(fields)
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def session(home, ref: str) -> tuple[ort.InferenceSession, bytes, registry.ModelVersion]:
    db = home.db()
    try:
        mv = registry.resolve(db, ref)
    finally:
        db.close()
    data = home.blobs.read_bytes(mv.onnx_digest)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]), data, mv


FEEDS = {"x1": np.array([[0.5], [np.nan], [-2.0]], dtype=np.float32),
         "x2": np.array([[1.0], [0.0], [np.nan]], dtype=np.float32),
         "colour": np.array([["red"], ["never-seen"], [""]], dtype=object),
         "member": np.array([[1.0], [0.0], [1.0]], dtype=np.float32),
         "price": np.array([[3.0], [np.nan], [1.0]], dtype=np.float32)}


def test_train_wait_registers_a_tree_classifier_taking_the_raw_columns(runner, home, db,
                                                                        dataset, tmp_path):
    r = runner("train", str(recipe(tmp_path)), "--wait")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch ")][-1] == "20/20"
    assert any(ln.startswith("parity: max |onnxruntime - scikit-learn| = ") for ln in lines)
    assert lines[-1].startswith("registered trees@1")
    sess, data, mv = session(home, "trees@1")
    types = {i["name"]: i["datatype"] for i in mv.signature["inputs"]}
    assert types == {"x1": "FP32", "x2": "FP32", "colour": "BYTES", "member": "FP32",
                     "price": "FP32"}  # the same inputs as the torch templates' models
    assert mv.signature["classes"] == ["false", "true"] and mv.run_id is not None
    packages = get_run(db, mv.run_id).environment["packages"]
    assert packages["scikit-learn"] == metadata.version("scikit-learn")
    assert set(mv.metrics["test"]) == {"accuracy", "log_loss", "f1_macro", "roc_auc"}
    assert mv.metrics["test"]["accuracy"] >= 0.8
    assert 0 <= mv.metrics["parity_max_abs_diff"] <= 1e-5
    stored = onnx.load_from_string(data)
    assert {p.key: json.loads(p.value) for p in stored.metadata_props} == {
        "classes": ["false", "true"]}
    assert not any(n.op_type == "ZipMap" for n in stored.graph.node)
    probabilities, label = sess.run(["probabilities", "label"], FEEDS)
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert list(label) == list(probabilities.argmax(axis=1))
    curves = run_steps(db, mv.run_id)
    assert [step for step, _ in curves["loss"]] == list(range(1, 21))  # one loss per tree
    assert curves["val_loss"][-1][1] < curves["val_loss"][0][1]


@pytest.mark.parametrize(("template", "target"), [("gbt_classifier", "label"),
                                                  ("gbt_regressor", "price")])
def test_the_same_recipe_gives_the_same_bytes_and_reproduces_identically(
        home, dataset, tmp_path, template, target) -> None:
    model = {"template": template, "params": {"max_iter": 15, "max_leaf_nodes": 8}}
    first = run_training(home, recipe(tmp_path, name="a", target=target, model=model), "t")
    second = run_training(home, recipe(tmp_path, name="b", target=target, model=model), "t")
    assert first.onnx_digest == second.onnx_digest
    assert first.weights_digest == second.weights_digest and first.metrics == second.metrics
    again = reproduce_run(home, first.run_id, "t")
    assert again.verdict == "identical" and again.differences == [] and again.weights_equal
    other = run_training(home, recipe(tmp_path, name="c", target=target, model=model, seed=8),
                         "t")
    assert other.weights_digest != first.weights_digest  # another split, other trees
    if target == "price":
        assert set(first.metrics["test"]) == {"rmse", "mae", "r2"}
        sess, _, _ = session(home, first.model_version)
        feeds = {**{k: v for k, v in FEEDS.items() if k != "price"},
                 "label": np.array([[1.0], [0.0], [np.nan]], dtype=np.float32)}
        (prediction,) = sess.run(["prediction"], feeds)
        assert prediction.shape == (3,) and prediction.dtype == np.float32


def test_a_multiclass_tree_classifier_gives_a_column_per_class(home, dataset, tmp_path) -> None:
    result = run_training(home, recipe(tmp_path, target="colour", features=["x1", "x2", "member"]),
                          "t")
    sess, _, mv = session(home, result.model_version)
    assert mv.signature["classes"] == ["blue", "green", "red"]
    feeds = {"x1": FEEDS["x1"], "x2": FEEDS["x2"], "member": FEEDS["member"]}
    probabilities, label = sess.run(["probabilities", "label"], feeds)
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert list(label) == list(probabilities.argmax(axis=1))
    assert result.parity_max_abs_diff is not None and result.parity_max_abs_diff <= 1e-5


def test_onnx_takes_every_split_scikit_learn_takes_between_adjacent_floats() -> None:
    # Pairs of adjacent float32 values with opposite labels: each split falls halfway
    # between two floats, where a float32 threshold would round onto one of them.
    rng = np.random.default_rng(3)
    low = np.sort(rng.uniform(1, 1000, size=40)).astype(np.float32)
    high = np.nextafter(low, np.float32(np.inf))
    x0 = np.repeat(np.concatenate([low, high]), 10)
    y = np.repeat(np.concatenate([np.zeros(40), np.ones(40)]), 10).astype(np.int64)
    x = np.stack([x0, rng.normal(size=len(x0)).astype(np.float32)], axis=1)
    model = estimator("classification", {
        "max_iter": 30, "learning_rate": 0.3, "max_leaf_nodes": 64, "max_depth": None,
        "min_samples_leaf": 1, "l2_regularization": 0.0, "max_bins": 255}, seed=0)
    model.fit(x, y)
    assert (model.predict(x) == y).mean() > 0.9  # it did learn the pairs apart
    enc = Encoding("classification", "y", (Feature("a", "numeric", "numeric"),
                                            Feature("b", "numeric", "numeric")),
                   classes=("0", "1"))
    sess = ort.InferenceSession(export_trees(model, enc), providers=["CPUExecutionProvider"])
    probabilities, label = sess.run(["probabilities", "label"],
                                    {"a": x[:, :1].copy(), "b": x[:, 1:].copy()})
    assert label.tolist() == model.predict(x).tolist()
    assert float(np.abs(probabilities - model.predict_proba(x)).max()) < 1e-6


def test_a_parity_failure_names_scikit_learn(home, db, dataset, tmp_path) -> None:
    config = parse_config({"training": {"parity_tolerance": 0.0}})
    path = recipe(tmp_path, model={"template": "gbt_classifier", "params": {"max_iter": 5}})
    with pytest.raises(OperationFailed, match=r"differs from scikit-learn by "):
        run_training(home, path, "t", config=config)
    assert get_run(db, 1).status == "failed"


@pytest.mark.parametrize(
    ("model", "device", "message"),
    [
        ({"template": "gbt_classifier", "params": {"epochs": 3}},
         "auto", "unknown ['epochs']; gbt_classifier accepts"),
        ({"template": "gbt_regressor", "params": {"max_bins": 300}},
         "auto", "'model.params.max_bins': 300 must be <= 255"),
        ({"template": "gbt_classifier", "params": {"learning_rate": 0}},
         "auto", "'model.params.learning_rate': 0 must be > 0"),
        ({"template": "gbt_classifier", "params": {"max_depth": 0}},
         "auto", "'model.params.max_depth': 0 must be >= 1"),
        ({"template": "gbt_classifier", "params": {"max_iter": 2.5}},
         "auto", "'model.params.max_iter': 2.5 is not an integer"),
        ({"template": "gbt_classifier"}, "cuda", "'device': gbt_classifier trains on the CPU"),
    ],
)
def test_bad_tree_recipes_exit_2_naming_the_field(runner, dataset, tmp_path, model, device,
                                                  message) -> None:
    r = runner("train", str(recipe(tmp_path, model=model, device=device)), "--wait")
    assert r.exit_code == 2, r.output
    assert message in r.stderr


def test_v2_metadata_gives_the_served_classifiers_class_labels(home, dataset, tmp_path) -> None:
    trees = run_training(home, recipe(tmp_path), "t")
    price = run_training(home, recipe(tmp_path, name="price", target="price",
                                      model={"template": "gbt_regressor"}), "t")
    db = home.db()
    try:
        set_alias(db, "trees", 1, "production", "t")
        set_alias(db, "price", 1, "production", "t")
    finally:
        db.close()
    assert trees.model_version == "trees@1" and price.model_version == "price@1"
    server, _, _ = registry_server(home)
    try:
        status, _, meta = call(server, "GET", "/v2/models/trees")
        assert status == 200, meta
        outputs = {o["name"]: o for o in meta["outputs"]}
        assert outputs["probabilities"] == {"name": "probabilities", "datatype": "FP32",
                                            "shape": [-1, 2],
                                            "parameters": {"classes": ["false", "true"]}}
        assert "parameters" not in outputs["label"]
        columns = {"x1": [0.5, -1.0], "x2": [1.0, 0.25], "colour": ["red", "blue"],
                   "member": [1.0, 0.0], "price": [3.0, 1.5]}
        body = {"inputs": [{"name": n, "shape": [2, 1], "data": v,
                            "datatype": "BYTES" if n == "colour" else "FP32"}
                           for n, v in columns.items()]}
        status, _, answer = call(server, "POST", "/v2/models/trees/infer", body)
        assert status == 200, answer
        got = {o["name"]: o["data"] for o in answer["outputs"]}
        sess, _, _ = session(home, "trees@1")
        feeds = {n: np.array(v, dtype=object if n == "colour" else np.float32).reshape(-1, 1)
                 for n, v in columns.items()}
        expected, _ = sess.run(["probabilities", "label"], feeds)
        assert np.allclose(got["probabilities"], expected.ravel(), rtol=0, atol=1e-7)
        status, _, meta = call(server, "GET", "/v2/models/price")
        assert status == 200 and all("parameters" not in o for o in meta["outputs"])
    finally:
        server.stop()


def test_drift_and_quality_checks_read_a_tree_model_as_any_other(home, db, tmp_path) -> None:
    from helpers.monitoring import CONFIG, features, log_requests, truth

    from appliance.datasets import add_dataset
    from appliance.monitoring import Window, add_feedback, run_check

    add_dataset(db, home.blobs, "shop", write_csv(tmp_path / "shop.csv", rows=400), actor="t",
                target="label")
    result = run_training(home, {"name": "buyer", "dataset": "shop@1", "seed": 7, "model": {
        "template": "gbt_classifier", "params": {"max_iter": 30}}}, "t", config=CONFIG)
    set_alias(db, "buyer", 1, "production", "t")
    served = registry.resolve(db, result.model_version)
    now = time.time()
    calm = features(300, 11)
    ids = log_requests(home, served, calm, start=now - 3000, prefix="calm")
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,label\n" + "".join(
        f"{i},{lab}\n" for i, lab in zip(ids, truth(calm), strict=True)))
    add_feedback(home, "buyer", labels, actor="t")
    check = run_check(home, "buyer", window=Window(now - 3100, now - 2500), config=CONFIG,
                      actor="t")
    report = check.as_dict()
    assert report["data_drift"]["dataset_drift"] is False
    assert check.performance is not None and check.performance["labelled_rows"] == 300
    assert check.performance["metrics"]["accuracy"] >= 0.8
    log_requests(home, served, features(300, 12, x1_shift=1.0, colours=("red",)),
                 start=now - 400, prefix="shift")
    shifted = run_check(home, "buyer", window=Window(now - 500, now), config=CONFIG, actor="t")
    drifted = {c["name"] for c in shifted.as_dict()["data_drift"]["columns"] if c["drifted"]}
    assert {"x1", "colour"} <= drifted and "x2" not in drifted


def test_a_capacity_profile_loads_and_sweeps_a_tree_model(home, dataset, tmp_path) -> None:
    from appliance.capacity import store
    from appliance.jobs.capacity import run_profile_job
    from appliance.queue.context import JobContext

    result = run_training(home, recipe(tmp_path), "t")
    work = tmp_path / "job" / "work"
    work.mkdir(parents=True)
    ctx = JobContext(job_id=1, kind="capacity-profile", attempt=1, workdir=work,
                     home=home.root, config=parse_config({}),
                     params={"model": result.model_version, "batch_sizes": "1,8",
                             "concurrency": [1], "window_s": 0.1, "max_windows": 4})
    done = run_profile_job(ctx)
    assert done["points"] == 2 and done["kind"] == "tabular"
    with home.db() as db:
        profile = store.latest(db, result.model_version)
    assert profile is not None
    assert [p["batch_size"] for p in profile["points"]] == [1, 8]
    assert all(p["requests_per_s"] > 0 for p in profile["points"])
