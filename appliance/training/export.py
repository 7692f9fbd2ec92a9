"""Exporting a trained module to ONNX, checking it, and proving it computes the same.

torch's TorchScript exporter (``dynamo=False``) traces the module; the graph's
categorical inputs, which torch sees as integer codes, are then given
``ai.onnx.ml.LabelEncoder`` nodes so that the model takes the raw strings.
``onnx.checker`` validates the result, and the parity check runs
onnxruntime on the test split's raw columns against torch's outputs.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any, cast

import numpy as np

from appliance.errors import OperationFailed
from appliance.onnxtools.sessions import cpu_session
from appliance.training.features import Encoding
from appliance.training.templates import output_names

OPSET = 17
ML_OPSET = 2


def export_onnx(module: Any, enc: Encoding, example: list[np.ndarray]) -> bytes:
    import onnx
    import torch

    names = [f.name for f in enc.features]
    outputs = output_names(enc.task)
    axes = {n: {0: "batch"} for n in names + outputs}
    buffer = io.BytesIO()
    tensors = tuple(torch.from_numpy(a) for a in example)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, tensors, cast(Any, buffer), input_names=names, output_names=outputs,
            dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    model = onnx.load_from_string(buffer.getvalue())
    _raw_categoricals(model, enc)
    model.producer_name = "appliance"
    model.producer_version = ""
    data: bytes = model.SerializeToString(deterministic=True)
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OperationFailed(f"the exported model fails onnx.checker: {exc}") from exc
    return data


def _raw_categoricals(model: Any, enc: Encoding) -> None:
    """Give each categorical input a LabelEncoder: string in, the code torch expects out."""
    from onnx import TensorProto, helper

    categorical = {f.name: f for f in enc.features if f.kind == "categorical"}
    if not categorical:
        return
    graph = model.graph
    nodes = []
    for value in graph.input:
        feature = categorical.get(value.name)
        if feature is None:
            continue
        code = f"{value.name}::code"
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name == value.name:
                    node.input[k] = code
        nodes.append(helper.make_node(
            "LabelEncoder", [value.name], [code], domain="ai.onnx.ml",
            name=f"encode::{value.name}", keys_strings=list(feature.vocabulary),
            values_int64s=list(range(len(feature.vocabulary))), default_int64=-1,
        ))
        value.type.tensor_type.elem_type = TensorProto.STRING
    for node in reversed(nodes):
        graph.node.insert(0, node)
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))


def weights_digest(model_bytes: bytes) -> str:
    """SHA-256 over every initializer (name, type, shape, bytes), in name order, then over
    the attributes of every tree ensemble node (a tree's splits and leaves are attributes,
    not initializers), in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    hasher = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        array = numpy_helper.to_array(init)
        hasher.update(init.name.encode() + b"\0" + str(array.dtype).encode() + b"\0"
                      + repr(array.shape).encode() + b"\0" + np.ascontiguousarray(array).tobytes())
    for node in model.graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type.startswith("TreeEnsemble"):
            hasher.update(node.op_type.encode() + b"\0")
            for attr in sorted(node.attribute, key=lambda a: a.name):
                hasher.update(attr.SerializeToString(deterministic=True))
    return hasher.hexdigest()


def parity(model_bytes: bytes, feeds: dict[str, np.ndarray],
           expected: dict[str, np.ndarray], tolerance: float, *, reference: str = "torch",
           relative: bool = False) -> float:
    """Largest absolute difference between onnxruntime and ``reference`` on the float
    outputs; raise when it is over ``tolerance`` (with ``relative``, when a difference is
    over ``tolerance`` times the larger of 1 and the expected value's magnitude: a float32
    output holds about 7 significant digits, whatever the scale of the target)."""
    session = cpu_session(model_bytes)
    names = list(expected)
    got = dict(zip(names, session.run(names, feeds), strict=True))
    worst = 0.0
    over = 0.0
    for name, want in expected.items():
        if not np.issubdtype(want.dtype, np.floating):
            continue
        want64 = want.astype(np.float64)
        diff = np.abs(got[name].astype(np.float64).reshape(want.shape) - want64)
        if not diff.size:
            continue
        worst = max(worst, float(np.nanmax(diff)))
        scaled = diff / np.maximum(1.0, np.abs(want64)) if relative else diff
        over = max(over, float(np.nanmax(scaled)))
    if over > tolerance or not np.isfinite(worst):
        scale = " relative to the values' magnitude" if relative else ""
        raise OperationFailed(
            f"parity check failed: onnxruntime differs from {reference} by {worst:.3g} on the "
            f"test split (tolerance {tolerance:g}{scale})"
        )
    return worst
