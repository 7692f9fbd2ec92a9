"""Small synthetic tabular files for the datasets, registry and training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    """Columns: x1, x2 (numeric, some missing), colour (categorical), member (boolean),
    day (timestamp), label (yes/no, depends on the others), price (numeric)."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    label = (x1 + 0.5 * x2 + (colour == "red")) > 0.3
    lines = ["x1,x2,colour,member,day,label,price"]
    for i in range(rows):
        x2_cell = "" if i % 40 == 7 else f"{x2[i]:.5f}"
        lines.append(
            f"{x1[i]:.5f},{x2_cell},{colour[i]},{'true' if i % 3 else 'false'},"
            f"2024-01-{1 + i % 28:02d}T00:00:00Z,{'yes' if label[i] else 'no'},"
            f"{2 * x1[i] - x2[i] + 3:.4f}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def logistic_onnx(path: Path, w1: float, w2: float, bias: float, *, classes: list[str] | None = None,
                  zipmap: bool = False, inputs: tuple[str, str] = ("x1", "x2")) -> Path:
    """A binary classifier made as other tools make them: one FP32 [N, 1] input per column,
    outputs ``label`` and ``probabilities`` [N, 2] = (1 - p, p), p = sigmoid(w1 x1 + w2 x2 + b).

    ``classes`` declares the labels in an ai.onnx.ml node, as skl2onnx does; ``zipmap``
    ends the graph in skl2onnx's default ZipMap (a sequence of maps, ``output_probability``).
    """
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[w1], [w2]], dtype=np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    one = numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one")
    nodes = [
        helper.make_node("Concat", list(inputs), ["x"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities" if not zipmap else "probs"],
                         axis=1),
        helper.make_node("ArgMax", ["probabilities" if not zipmap else "probs"], ["idx"],
                         axis=1, keepdims=0),
    ]
    opsets = [helper.make_opsetid("", 17)]
    n = "N"
    if classes is not None:
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
        nodes.append(helper.make_node("LabelEncoder", ["idx"], ["label"], domain="ai.onnx.ml",
                                      keys_int64s=[0, 1], values_strings=classes))
        label = helper.make_tensor_value_info("label", TensorProto.STRING, [n])
    else:
        nodes.append(helper.make_node("Identity", ["idx"], ["label"]))
        label = helper.make_tensor_value_info("label", TensorProto.INT64, [n])
    if zipmap:
        zip_attrs = ({"classlabels_strings": classes} if classes is not None
                     else {"classlabels_int64s": [0, 1]})
        nodes.append(helper.make_node("ZipMap", ["probs"], ["output_probability"],
                                      domain="ai.onnx.ml", **zip_attrs))
        key = TensorProto.STRING if classes is not None else TensorProto.INT64
        prob_out = helper.make_value_info(
            "output_probability",
            helper.make_sequence_type_proto(helper.make_map_type_proto(
                key, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))
        if "ai.onnx.ml" not in [o.domain for o in opsets]:
            opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    else:
        prob_out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n, 2])
    graph = helper.make_graph(
        nodes, "logistic",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, 1]) for name in inputs],
        [label, prob_out], initializer=[weights, b, one])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="elsewhere")
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path
