"""Reading and checking ONNX models: signature, onnx.checker, a test inference.

The signature is what the serving daemon publishes as V2 model metadata:
inputs and outputs with their V2 datatype and shape (-1 for a variable
dimension), plus the feature names the model takes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.errors import BadInput
from appliance.onnxtools.providers import ort_errors
from appliance.onnxtools.sessions import cpu_session

# onnx.TensorProto element types to Open Inference Protocol datatypes.
V2_DATATYPES = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64",
    8: "BYTES", 9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64",
}
NUMPY_TYPES = {
    "FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8,
    "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
    "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_,
}


NOT_A_TENSOR = (
    "{source}ONNX {side} {name!r} is a {kind}, not a tensor; the V2 protocol serves tensors "
    "only. A classifier's sequence of maps (skl2onnx's ZipMap) is unwrapped at import; for "
    "anything else export the model with tensor outputs (skl2onnx: "
    "options={{id(model): {{'zipmap': False}}}}; onnxmltools: zipmap=False)"
)


def _tensor_info(value_info: Any, side: str = "input/output", source: str = "") -> dict[str, Any]:
    ttype = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        kind = value_info.type.WhichOneof("value") or "value of unknown type"
        kind = {"sequence_type": "sequence", "map_type": "map",
                "optional_type": "optional value"}.get(kind, kind)
        raise BadInput(NOT_A_TENSOR.format(source=f"{source}: " if source else "", side=side,
                                           name=value_info.name, kind=kind))
    datatype = V2_DATATYPES.get(ttype.elem_type)
    if datatype is None:
        raise BadInput(f"ONNX tensor {value_info.name!r} has an unsupported element type")
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
    return {"name": value_info.name, "datatype": datatype, "shape": shape}


def signature_of(model_bytes: bytes, source: str = "") -> dict[str, Any]:
    import onnx

    model = onnx.load_from_string(model_bytes)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_tensor_info(v, "input", source) for v in model.graph.input
              if v.name not in initializers]
    outputs = [_tensor_info(v, "output", source) for v in model.graph.output]
    return {"inputs": inputs, "outputs": outputs, "feature_names": [i["name"] for i in inputs]}


def unzip_maps(model_bytes: bytes) -> tuple[bytes, list[str]] | None:
    """A classifier whose probabilities end in a ZipMap (a sequence of maps, skl2onnx's and
    onnxmltools' default), rewritten to give them as the tensor the ZipMap reads.

    The output is named ``probabilities`` (``FP32 [N, classes]``, as skl2onnx names it with
    ``zipmap: False``) and the class labels, in column order, are stored in the model's
    metadata as ``classes`` (a JSON list of strings). Returns the new bytes (serialised
    deterministically, so the same file always gives the same bytes) and the labels, or
    None when no output is a ZipMap's.
    """
    import json

    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    zipped: list[tuple[int, Any]] = []
    for i, out in enumerate(graph.output):
        node = producers.get(out.name)
        if (not out.type.HasField("tensor_type") and node is not None
                and node.op_type == "ZipMap" and node.domain == "ai.onnx.ml"):
            zipped.append((i, node))
    if not zipped:
        return None
    if len(zipped) > 1:
        raise BadInput("the model has several ZipMap outputs; export it with "
                       "options={id(model): {'zipmap': False}} (skl2onnx) or zipmap=False "
                       "(onnxmltools)")
    index, node = zipped[0]
    labels: list[str] = []
    for attr in node.attribute:
        if attr.name == "classlabels_strings":
            labels = [v.decode() for v in attr.strings]
        elif attr.name == "classlabels_int64s":
            labels = [str(v) for v in attr.ints]
    taken = {o.name for o in graph.output} - {graph.output[index].name}
    name = "probabilities" if "probabilities" not in taken else "class_probabilities"
    graph.node.remove(node)
    graph.node.append(helper.make_node("Identity", [node.input[0]], [name],
                                       name="unzipped_probabilities"))
    graph.output.remove(graph.output[index])
    graph.output.insert(index, helper.make_tensor_value_info(
        name, TensorProto.FLOAT, ["N", len(labels) or None]))
    if not any(n.domain == "ai.onnx.ml" for n in graph.node):
        keep = [o for o in model.opset_import if o.domain != "ai.onnx.ml"]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    for prop in list(model.metadata_props):
        if prop.key == "classes":
            model.metadata_props.remove(prop)
    model.metadata_props.append(onnx.StringStringEntryProto(key="classes",
                                                             value=json.dumps(labels)))
    return model.SerializeToString(deterministic=True), labels


def declared_classes(model_bytes: bytes) -> list[str] | None:
    """Class labels the model declares: its ``classes`` metadata, else those of an
    ai.onnx.ml classifier or ZipMap node, in column order."""
    import json

    import onnx

    model = onnx.load_from_string(model_bytes)
    for prop in model.metadata_props:
        if prop.key == "classes":
            try:
                value = json.loads(prop.value)
            except ValueError:
                continue
            if isinstance(value, list):
                return [str(v) for v in value]
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "classlabels_strings":
                return [v.decode() for v in attr.strings]
            if attr.name in ("classlabels_int64s", "classlabels_ints"):
                return [str(v) for v in attr.ints]
    return None


def check_model(model_bytes: bytes, source: str) -> None:
    """onnx.checker on the model, with a message that names the file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(model_bytes)
    except DecodeError as exc:
        raise BadInput(f"{source} is not an ONNX model (it does not parse)") from exc
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise BadInput(f"{source} fails onnx.checker: {str(exc).splitlines()[0]}") from exc


def zeros_for(signature: dict[str, Any], rows: int = 1) -> dict[str, np.ndarray]:
    feeds: dict[str, np.ndarray] = {}
    for spec in signature["inputs"]:
        shape = [rows if i == 0 and d == -1 else (1 if d == -1 else d)
                 for i, d in enumerate(spec["shape"])]
        if spec["datatype"] == "BYTES":
            feeds[spec["name"]] = np.full(shape, "", dtype=object)
        else:
            feeds[spec["name"]] = np.zeros(shape, dtype=NUMPY_TYPES[spec["datatype"]])
    return feeds


def probe_inference(model_bytes: bytes, signature: dict[str, Any], source: str) -> None:
    """Run the model once on zeros (empty strings for BYTES inputs) on the CPU."""
    try:
        session = cpu_session(model_bytes)
        session.run(None, zeros_for(signature))
    except ort_errors() as exc:
        raise BadInput(
            f"{source} failed a test inference on zeros: {str(exc).splitlines()[0]}"
        ) from exc
