"""The gradient-boosted tree templates: scikit-learn's HistGradientBoosting, written
out as an ONNX tree ensemble.

The model sees one float matrix: numeric and boolean columns as they are (NaN for
missing, which the trees route on their own), categorical columns as the index of the
value in the training split's sorted vocabulary (NaN for missing or unseen). The exported
graph takes the same raw columns as the torch templates' models, one input each, and
rebuilds that matrix itself: an ``ai.onnx.ml.LabelEncoder`` per categorical input, a
``Concat``, and a ``Cast`` to double. One ``TreeEnsembleRegressor`` (ai.onnx.ml 3, its
thresholds and leaves as double tensors) gives the raw scores, then a sigmoid or softmax
the probabilities, as scikit-learn computes them. The trees compare doubles with
scikit-learn's own double thresholds, so onnxruntime takes every split scikit-learn takes
(a float32 threshold would send a value equal to the rounded threshold the other way).
The export is written here rather than by skl2onnx: its 1.20.0 fails on these models under
onnx 1.23 and writes float32 thresholds for the classifier.

Reproducible: no random source is left unseeded (``random_state`` is the recipe's seed,
which also draws the split), early stopping is off (the number of trees is ``max_iter``),
and OpenMP runs on ``training.threads`` threads while fitting.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.errors import BadInput, OperationFailed
from appliance.training import features as feat
from appliance.training.export import OPSET, parity
from appliance.training.recipe import Recipe
from appliance.training.trainer import Outcome, Progress, outcome, split_rows

# TreeEnsembleClassifier/Regressor version 3: thresholds and leaf weights as doubles.
TREE_ML_OPSET = 3
IR_VERSION = 8
INPUT = "gbt::features"


def matrix(table: Table, enc: feat.Encoding, rows: np.ndarray) -> np.ndarray:
    """The ``[rows, features]`` float32 matrix the trees are fitted on."""
    columns = []
    for f, column in zip(enc.features, feat.model_inputs(table, enc, rows), strict=True):
        values = column.reshape(-1).astype(np.float32)
        if f.kind == "categorical":
            values[column.reshape(-1) < 0] = np.nan
        columns.append(values)
    return np.stack(columns, axis=1)


def estimator(task: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" else \
        HistGradientBoostingRegressor
    return cls(
        max_iter=params["max_iter"], learning_rate=params["learning_rate"],
        max_leaf_nodes=params["max_leaf_nodes"], max_depth=params["max_depth"],
        min_samples_leaf=params["min_samples_leaf"],
        l2_regularization=params["l2_regularization"], max_bins=params["max_bins"],
        early_stopping=False, random_state=seed,
    )


def _loss(task: str, y: np.ndarray, scores: np.ndarray) -> float:
    """Log loss of the rows with a known class, or the mean squared error."""
    if task == "classification":
        known = y >= 0
        picked = scores[known][np.arange(int(known.sum())), y[known]]
        return float(-np.log(np.clip(picked, 1e-15, 1.0)).mean()) if known.any() else 0.0
    return float(((scores.astype(np.float64) - y.astype(np.float64)) ** 2).mean())


def _staged(model: Any, task: str, x: np.ndarray) -> Any:
    return model.staged_predict_proba(x) if task == "classification" else model.staged_predict(x)


def _predict(model: Any, task: str, x: np.ndarray) -> np.ndarray:
    out = model.predict_proba(x) if task == "classification" else model.predict(x)
    return np.asarray(out, dtype=np.float64)


def train_trees(table: Table, recipe: Recipe, target: str, *, threads: int,
                parity_tolerance: float, progress: Progress) -> Outcome:
    """Fit, score, export and check a ``gbt_*`` template; one progress event per tree
    (``epoch`` is the boosting iteration)."""
    from threadpoolctl import threadpool_limits

    if recipe.template is None or recipe.task is None:
        raise BadInput("recipe names no built-in template")
    task, params = recipe.task, recipe.params
    chosen = feat.choose_features(table, target, recipe.features)
    splits = split_rows(feat.labelled_rows(table, target, task), recipe.split, recipe.seed)
    enc = feat.fit_encoding(table, target, chosen, task, splits["train"])
    x = {k: matrix(table, enc, rows) for k, rows in splits.items()}
    y = {k: feat.targets(table, enc, rows) for k, rows in splits.items()}
    with threadpool_limits(limits=threads, user_api="openmp"):
        model = estimator(task, params, recipe.seed)
        model.fit(x["train"], y["train"])
        scores = _report_iterations(model, task, x, y, progress)
        scores["test"] = _predict(model, task, x["test"])
        metrics: dict[str, Any] = {}
        for name, rows in splits.items():
            if len(rows):
                metrics[name] = feat.compute_metrics(task, y[name], scores[name], recipe.metrics)
        expected = scores["test"]
    progress({"event": "export"})
    onnx_bytes = export_trees(model, enc)
    wanted = {"probabilities" if task == "classification" else "prediction": expected}
    diff = parity(onnx_bytes, feat.raw_inputs(table, enc, splits["test"]), wanted,
                  parity_tolerance, reference="scikit-learn", relative=task == "regression")
    progress({"event": "parity", "max_abs_diff": diff, "reference": "scikit-learn"})
    return outcome(onnx_bytes, task, target, enc, splits, metrics, "cpu", diff)


def _report_iterations(model: Any, task: str, x: dict[str, np.ndarray],
                       y: dict[str, np.ndarray], progress: Progress) -> dict[str, np.ndarray]:
    """One event per tree with the loss so far; the last scores of the train and
    validation splits, which are those of the whole model."""
    total = int(model.n_iter_)
    validation = _staged(model, task, x["validation"]) if len(y["validation"]) else None
    last: dict[str, np.ndarray] = {}
    for i, train_scores in enumerate(_staged(model, task, x["train"]), start=1):
        last["train"] = train_scores
        event: dict[str, Any] = {"event": "epoch", "epoch": i, "epochs": total,
                                 "loss": _loss(task, y["train"], train_scores)}
        if validation is not None:
            last["validation"] = next(validation)
            event["val_loss"] = _loss(task, y["validation"], last["validation"])
        progress(event)
    return {k: np.asarray(v, dtype=np.float64) for k, v in last.items()}


def export_trees(model: Any, enc: feat.Encoding) -> bytes:
    """The fitted model as ONNX taking the raw columns: ``probabilities`` and ``label`` (an
    index into ``classes``, which the metadata also holds as JSON), or ``prediction``."""
    import onnx
    from onnx import TensorProto, helper

    classification = enc.task == "classification"
    nodes = _input_nodes(enc)
    raw = "gbt::raw"
    nodes.append(helper.make_node("TreeEnsembleRegressor", [INPUT], [raw], domain="ai.onnx.ml",
                                  name="trees", **_ensemble(model)))
    if not classification:
        outputs = [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch"])]
        nodes.append(helper.make_node("Reshape", [raw, "gbt::flat"], ["prediction"],
                                      name="flatten::prediction"))
        initializers = [helper.make_tensor("gbt::flat", TensorProto.INT64, [1], [-1])]
    else:
        initializers = []
        if len(enc.classes) == 2:  # one score, the log-odds of the second class
            initializers = [helper.make_tensor("gbt::one", TensorProto.FLOAT, [1], [1.0])]
            nodes += [helper.make_node("Sigmoid", [raw], ["gbt::p1"], name="sigmoid"),
                      helper.make_node("Sub", ["gbt::one", "gbt::p1"], ["gbt::p0"],
                                       name="complement"),
                      helper.make_node("Concat", ["gbt::p0", "gbt::p1"], ["probabilities"],
                                       axis=1, name="concat::probabilities")]
        else:
            nodes.append(helper.make_node("Softmax", [raw], ["probabilities"], axis=1,
                                          name="softmax"))
        nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1,
                                      keepdims=0, name="argmax"))
        outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                 ["batch", len(enc.classes)]),
                   helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])]
    inputs = [helper.make_tensor_value_info(
        f.name, TensorProto.FLOAT if f.kind == "numeric" else TensorProto.STRING, ["batch", 1])
        for f in enc.features]
    graph = helper.make_graph(nodes, "gbt", inputs, outputs, initializers)
    model_proto = helper.make_model(graph, producer_name="appliance", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", TREE_ML_OPSET)])
    model_proto.ir_version = IR_VERSION
    if classification:
        model_proto.metadata_props.append(
            onnx.StringStringEntryProto(key="classes", value=json.dumps(list(enc.classes))))
    data: bytes = model_proto.SerializeToString(deterministic=True)
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OperationFailed(f"the exported model fails onnx.checker: {exc}") from exc
    return data


def _input_nodes(enc: feat.Encoding) -> list[Any]:
    """The nodes that turn the raw columns into the double matrix ``features``."""
    from onnx import TensorProto, helper

    parts, nodes = [], []
    for f in enc.features:
        if f.kind == "numeric":
            parts.append(f.name)
            continue
        code = f"{f.name}::code"
        nodes.append(helper.make_node(
            "LabelEncoder", [f.name], [code], domain="ai.onnx.ml", name=f"encode::{f.name}",
            keys_strings=list(f.vocabulary),
            values_floats=[float(i) for i in range(len(f.vocabulary))],
            default_float=float("nan"),
        ))
        parts.append(code)
    nodes.append(helper.make_node("Concat", parts, [f"{INPUT}::float"], axis=1,
                                  name="concat::features"))
    nodes.append(helper.make_node("Cast", [f"{INPUT}::float"], [INPUT], to=TensorProto.DOUBLE,
                                  name="cast::features"))
    return nodes


def _ensemble(model: Any) -> dict[str, Any]:
    """A ``TreeEnsembleRegressor``'s attributes for every tree of a fitted model: the raw
    score (log-odds, logits, or the prediction), one target per tree of an iteration.

    Each split is scikit-learn's: ``x <= threshold`` (a double) goes left, a missing value
    goes where ``missing_go_to_left`` says. The leaves already carry the learning rate.
    """
    from onnx import numpy_helper

    per_iteration = int(model.n_trees_per_iteration_)
    attrs: dict[str, list[Any]] = {k: [] for k in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids")}
    thresholds: list[float] = []
    weights: list[float] = []
    for i, trees in enumerate(model._predictors):
        for k, predictor in enumerate(trees):
            tree_id = i * per_iteration + k
            for node_id, node in enumerate(predictor.nodes):
                leaf = bool(node["is_leaf"])
                if not leaf and bool(node["is_categorical"]):
                    raise OperationFailed("a tree splits on a categorical set, which the "
                                          "export does not write")
                attrs["nodes_treeids"].append(tree_id)
                attrs["nodes_nodeids"].append(node_id)
                attrs["nodes_featureids"].append(0 if leaf else int(node["feature_idx"]))
                attrs["nodes_modes"].append("LEAF" if leaf else "BRANCH_LEQ")
                thresholds.append(0.0 if leaf else float(node["num_threshold"]))
                attrs["nodes_truenodeids"].append(0 if leaf else int(node["left"]))
                attrs["nodes_falsenodeids"].append(0 if leaf else int(node["right"]))
                attrs["nodes_missing_value_tracks_true"].append(
                    0 if leaf else int(node["missing_go_to_left"]))
                if leaf:
                    attrs["target_treeids"].append(tree_id)
                    attrs["target_nodeids"].append(node_id)
                    attrs["target_ids"].append(k)
                    weights.append(float(node["value"]))
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    return {
        **attrs, "n_targets": per_iteration, "aggregate_function": "SUM",
        "post_transform": "NONE",
        "nodes_values_as_tensor": numpy_helper.from_array(np.array(thresholds, np.float64)),
        "target_weights_as_tensor": numpy_helper.from_array(np.array(weights, np.float64)),
        "base_values_as_tensor": numpy_helper.from_array(baseline),
    }
