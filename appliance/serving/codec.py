"""The Open Inference Protocol (KServe V2) tensor codec: JSON and Triton's binary extension.

``decode_request`` turns a request body into numpy arrays checked against the
model's signature, raising ``BadInput`` that names the offending input, so a
bad request is refused before it reaches a batch shared with others.
``encode_response`` renders outputs as JSON ``data`` or, where asked, as
binary tensors after the JSON header (``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import numpy as np
import orjson

from appliance.errors import BadInput
from appliance.serving.signature import V2_TO_NUMPY, Signature, numpy_to_v2


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    rows: int
    outputs: tuple[str, ...]  # in the order they are answered
    binary_outputs: frozenset[str] = field(default_factory=frozenset)


# Little-endian forms of the V2 dtypes, as the binary extension sends them.
_LITTLE = {name: dtype.newbyteorder("<") for name, dtype in V2_TO_NUMPY.items()}


def _shape_text(shape: Any) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _parse_json(part: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(part)
    except orjson.JSONDecodeError:
        # orjson is strict RFC 8259; the standard library also takes NaN, Infinity, a BOM
        # and UTF-16, as this server always has, and words its errors well.
        doc = _parse_json_leniently(bytes(part))
    if not isinstance(doc, dict):
        raise BadInput("request body must be a JSON object with 'inputs'")
    return doc


def _parse_json_leniently(part: bytes) -> Any:
    try:
        doc = json.loads(part)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise BadInput("request body is not valid JSON: it is nested too deeply") from None
    return doc


def _bytes_elements(chunk: memoryview, name: str) -> list[str]:
    items: list[str] = []
    pos = 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise BadInput(f"input '{name}': truncated BYTES element length")
        (n,) = struct.unpack_from("<I", chunk, pos)
        pos += 4
        if pos + n > len(chunk):
            raise BadInput(f"input '{name}': BYTES element runs past its binary data")
        try:
            items.append(bytes(chunk[pos : pos + n]).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(f"input '{name}': BYTES element {len(items)} is not UTF-8 text"
                           ) from None
        pos += n
    return items


# The JSON types each datatype takes (Open Inference Protocol: BOOL is true/false, the
# integer types take integers, the floating types numbers, BYTES strings).
_INTEGERS = frozenset({int})
_NUMBERS = frozenset({int, float})
_ALLOWED: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}), "BYTES": frozenset({str}),
    "FP16": _NUMBERS, "FP32": _NUMBERS, "FP64": _NUMBERS,
    **{t: _INTEGERS for t in ("UINT8", "UINT16", "UINT32", "UINT64",
                              "INT8", "INT16", "INT32", "INT64")},
}
_JSON_NAMES = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
               str: "a string", list: "a list", dict: "an object"}


def _leaves(data: Any) -> list[Any]:
    """The values of flat or nested lists, row-major (a ragged nesting keeps its lists,
    which then fail the type check or the shape check)."""
    if type(data) is not list:
        return [data]
    flat = data
    while flat and type(flat[0]) is list:
        nested = flat
        if any(type(x) is not list for x in nested):
            break
        flat = list(itertools.chain.from_iterable(nested))
    return flat


def _json_array(data: Any, name: str, datatype: str, dtype: np.dtype[Any]) -> np.ndarray:
    """One input's JSON ``data`` as an array, each element of the datatype's own JSON type
    (no null, no true for a number, no "1" for a number, no number for a string)."""
    leaves = _leaves(data)
    allowed = _ALLOWED[datatype]
    if not set(map(type, leaves)) <= allowed:
        for index, value in enumerate(leaves):
            if type(value) not in allowed:
                raise BadInput(
                    f"input '{name}': element {index} is "
                    f"{_JSON_NAMES.get(type(value), type(value).__name__)}, not a "
                    f"{datatype} value")
    if datatype == "BYTES":
        for index, value in enumerate(leaves):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput(f"input '{name}': element {index} is not valid Unicode text "
                               "(a lone surrogate)") from None
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = leaves
        return arr
    try:
        return np.asarray(leaves, dtype=dtype)
    except OverflowError:
        limits = np.iinfo(dtype) if dtype.kind in "iu" else None
        for index, value in enumerate(leaves):
            if limits is not None and not limits.min <= value <= limits.max:
                raise BadInput(f"input '{name}': element {index} ({value}) is out of the "
                               f"range of {datatype}") from None
        raise BadInput(f"input '{name}': a value is out of the range of {datatype}") from None
    except (ValueError, TypeError) as exc:
        raise BadInput(f"input '{name}': data is not {datatype} values: {exc}") from exc


def _array(
    item: Mapping[str, Any], name: str, datatype: str, shape: list[int],
    binary: memoryview, offset: int,
) -> tuple[np.ndarray, int]:
    """Decode one input's data; return the array and the new binary offset."""
    dtype = V2_TO_NUMPY[datatype]
    count = math.prod(shape)
    params = item.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadInput(f"input '{name}': 'parameters' must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise BadInput(
                f"input '{name}': binary_data_size {size} runs past the end of the body"
            )
        chunk = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            arr = np.array(_bytes_elements(chunk, name), dtype=object)
        else:
            if size != count * dtype.itemsize:
                raise BadInput(
                    f"input '{name}': {size} bytes of binary data do not hold shape "
                    f"{_shape_text(shape)} of {datatype}"
                )
            arr = np.frombuffer(chunk, dtype=_LITTLE[datatype])
    else:
        if "data" not in item:
            raise BadInput(f"input '{name}' has neither 'data' nor binary_data_size")
        arr = _json_array(item["data"], name, datatype, dtype)
    if arr.size != count:
        raise BadInput(
            f"input '{name}': {arr.size} values do not fill shape {_shape_text(shape)}"
        )
    return arr.reshape(shape), offset


def decode_request(
    body: bytes, header_length: int | None, signature: Signature, max_rows: int
) -> InferRequest:
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise BadInput(
                f"Inference-Header-Content-Length {header_length} does not fit a body of "
                f"{len(body)} bytes"
            )
        doc = _parse_json(body[:header_length])
        binary = memoryview(body)[header_length:]
    else:
        doc = _parse_json(body)
        binary = memoryview(b"")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadInput("request needs a non-empty 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None:
        if not isinstance(request_id, str):
            raise BadInput("request 'id' must be a string")
        if not _is_text(request_id):
            raise BadInput("request 'id' is not valid Unicode text (a lone surrogate)")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadInput("every input needs a 'name'")
        name = item["name"]
        spec = signature.input(name)
        if spec is None:
            known = ", ".join(s.name for s in signature.inputs)
            raise BadInput(f"unknown input '{name}'; the model's inputs are: {known}")
        if name in inputs:
            raise BadInput(f"input '{name}' is given twice")
        datatype = item.get("datatype")
        if datatype != spec.datatype:
            raise BadInput(
                f"input '{name}': datatype {datatype!r} does not match the model's "
                f"{spec.datatype}"
            )
        shape = item.get("shape")
        if not _is_shape(shape):
            raise BadInput(f"input '{name}': 'shape' must be a list of non-negative integers")
        if not _fits(shape, spec.shape):
            raise BadInput(
                f"input '{name}': shape {_shape_text(shape)} does not match the model's "
                f"{_shape_text(spec.shape)}"
            )
        inputs[name], offset = _array(item, name, datatype, shape, binary, offset)
    if offset != len(binary):
        raise BadInput(
            f"{len(binary) - offset} bytes of binary data are not claimed by any input"
        )
    missing = [s.name for s in signature.inputs if s.name not in inputs]
    if missing:
        raise BadInput(f"missing input '{missing[0]}'")

    rows = 1
    if signature.batchable:
        counts = [arr.shape[0] for arr in inputs.values()]
        rows = counts[0]
        if counts.count(rows) != len(counts):
            raise BadInput("inputs disagree on the batch size (their first axis)")
        if rows == 0:
            raise BadInput(f"input '{signature.inputs[0].name}': batch of zero rows")
        if rows > max_rows:
            raise BadInput(
                f"input '{signature.inputs[0].name}': batch of {rows} rows is more than the "
                f"limit of {max_rows}"
            )

    params = doc.get("parameters") or {}
    all_binary = bool(isinstance(params, dict) and params.get("binary_data_output"))
    outputs, binary_outputs = _requested_outputs(doc.get("outputs"), signature, all_binary)
    return InferRequest(request_id, inputs, rows, outputs, binary_outputs)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_shape(shape: Any) -> TypeGuard[list[int]]:
    """A list of non-negative integers (JSON's true and false are not integers here)."""
    if type(shape) is not list:
        return False
    for d in shape:
        if type(d) is not int or d < 0:
            return False
    return True


def _fits(shape: list[int], want: tuple[int, ...]) -> bool:
    """Whether a request's shape matches the model's, where -1 takes any length."""
    if len(shape) != len(want):
        return False
    for got, axis in zip(shape, want, strict=True):
        if axis != -1 and got != axis:
            return False
    return True


def _requested_outputs(
    raw: Any, signature: Signature, all_binary: bool
) -> tuple[tuple[str, ...], frozenset[str]]:
    if raw is None:
        every = signature.output_names
        return every, frozenset(every) if all_binary else frozenset()
    if not isinstance(raw, list):
        raise BadInput("'outputs' must be a list of {\"name\": ...}")
    names: list[str] = []
    binary: set[str] = set()
    known = signature.output_names
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadInput("every requested output needs a 'name'")
        name = item["name"]
        if name not in known:
            raise BadInput(
                f"unknown output '{name}'; the model's outputs are: {', '.join(known)}"
            )
        names.append(name)
        params = item.get("parameters") or {}
        wants = params.get("binary_data") if isinstance(params, dict) else None
        if wants or (wants is None and all_binary):
            binary.add(name)
    return tuple(names), frozenset(binary)


def _binary_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == object or arr.dtype.kind in ("U", "S"):
        parts = []
        for value in arr.ravel():
            data = value.encode() if isinstance(value, str) else bytes(value)
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    little = arr.dtype.newbyteorder("<")
    if arr.dtype != little:  # big-endian (equal on a little-endian host when native)
        arr = arr.astype(little)
    return arr.tobytes()  # row-major, whatever the array's own layout


def _json_data(arr: np.ndarray) -> Any:
    """Flat row-major values: a C-contiguous array of a plain numeric type as it is (orjson
    writes it itself, fast and exactly), anything else as a list."""
    flat = arr.ravel()
    kind = flat.dtype.kind
    if kind in ("O", "S", "U"):
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in flat]
    if kind in "biuf" and flat.dtype.isnative and flat.flags.c_contiguous:
        return flat
    return flat.tolist()


def _dump(doc: dict[str, Any], floats: list[np.ndarray]) -> bytes:
    """The JSON of a response whose ``floats`` are written as data.

    orjson writes NaN and Infinity as null, so null in its output (rare: it is no number,
    and a string holding it is rarer) sends the values to be checked, and where one is not
    finite the standard library writes them all (NaN, Infinity). Checking every value of
    every answer instead costs more than the rest of the encoding."""
    try:
        out = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # a type orjson lacks: the standard library decides
        out = None
    if out is not None and not (b"null" in out and any(not np.isfinite(a).all()
                                                          for a in floats)):
        return out
    return json.dumps(doc, separators=(",", ":"), allow_nan=True,
                      default=lambda a: a.tolist()).encode()


def encode_response(
    model_name: str,
    version: int,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """Render a response; return the body and, for binary outputs, the JSON header length."""
    rendered: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    floats: list[np.ndarray] = []  # written as data: NaN or Infinity may be among them
    for name in request.outputs:
        arr = outputs[name]
        entry: dict[str, Any] = {
            "name": name, "datatype": numpy_to_v2(arr.dtype), "shape": list(arr.shape),
        }
        if name in request.binary_outputs:
            blob = _binary_bytes(arr)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(arr)
            if arr.dtype.kind == "f":
                floats.append(arr)
        rendered.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = rendered
    header = _dump(doc, floats)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
