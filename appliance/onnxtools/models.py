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


def _tensor_info(value_info: Any) -> dict[str, Any]:
    ttype = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise BadInput(f"ONNX input/output {value_info.name!r} is not a tensor")
    datatype = V2_DATATYPES.get(ttype.elem_type)
    if datatype is None:
        raise BadInput(f"ONNX tensor {value_info.name!r} has an unsupported element type")
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
    return {"name": value_info.name, "datatype": datatype, "shape": shape}


def signature_of(model_bytes: bytes) -> dict[str, Any]:
    import onnx

    model = onnx.load_from_string(model_bytes)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_tensor_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_tensor_info(v) for v in model.graph.output]
    return {"inputs": inputs, "outputs": outputs, "feature_names": [i["name"] for i in inputs]}


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
