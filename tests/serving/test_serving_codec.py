"""The V2 tensor codec: JSON flat and nested, Triton's binary extension, and the 400s."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from appliance.errors import BadInput
from appliance.serving.codec import decode_request, encode_response
from appliance.serving.signature import Signature, TensorSpec

SIG = Signature(
    inputs=(TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1, 1))),
    outputs=(TensorSpec("sum", "FP32", (-1, 3)), TensorSpec("flag", "BOOL", (-1, 1))),
)


def body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def good_inputs(data_a: object = None) -> list[dict[str, object]]:
    return [
        {"name": "a", "shape": [2, 3], "datatype": "FP32",
         "data": data_a if data_a is not None else [1, 2, 3, 4, 5, 6]},
        {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [[7], [8]]},
    ]


def test_flat_and_nested_data_decode_to_the_same_arrays() -> None:
    flat = decode_request(body(inputs=good_inputs()), None, SIG, 64)
    nested = decode_request(body(inputs=good_inputs([[1, 2, 3], [4, 5, 6]])), None, SIG, 64)
    for req in (flat, nested):
        assert req.rows == 2
        assert req.inputs["a"].dtype == np.float32
        np.testing.assert_array_equal(req.inputs["a"], [[1, 2, 3], [4, 5, 6]])
        np.testing.assert_array_equal(req.inputs["b"], [[7], [8]])
        assert req.outputs == ("sum", "flag")


def test_binary_inputs_and_outputs_round_trip() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1], [-2]], dtype=np.int64)
    header = json.dumps({
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "shape": [2, 1], "datatype": "INT64",
             "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "flag", "parameters": {"binary_data": True}}, {"name": "sum"}],
    }).encode()
    req = decode_request(header + a.tobytes() + b.tobytes(), len(header), SIG, 64)
    np.testing.assert_array_equal(req.inputs["a"], a)
    np.testing.assert_array_equal(req.inputs["b"], b)
    assert req.outputs == ("flag", "sum") and req.binary_outputs == {"flag"}

    flag = np.array([[True], [False]])
    data, n = encode_response("m", 3, req, {"sum": a + 1, "flag": flag})
    assert n is not None
    doc = json.loads(data[:n])
    assert doc["id"] == "r1" and doc["model_version"] == "3"
    assert doc["outputs"][0] == {"name": "flag", "datatype": "BOOL", "shape": [2, 1],
                                 "parameters": {"binary_data_size": 2}}
    assert data[n:] == b"\x01\x00"
    assert doc["outputs"][1]["data"] == (a + 1).ravel().tolist()


def test_binary_outputs_are_little_endian_and_row_major_whatever_the_array() -> None:
    req = decode_request(body(inputs=good_inputs(), parameters={"binary_data_output": True}),
                         None, SIG, 64)
    big = np.arange(6, dtype=">f4").reshape(2, 3)  # big-endian
    column = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2]  # not contiguous
    for arr, want in ((big, np.arange(6, dtype="<f4")),
                      (column, np.array([0, 2, 4, 6, 8, 10], dtype="<f4"))):
        data, n = encode_response("m", 1, req, {"sum": arr, "flag": np.array([[True], [False]])})
        assert n is not None
        assert data[n:n + 24] == want.tobytes()


def test_binary_data_output_parameter_makes_every_output_binary() -> None:
    req = decode_request(body(inputs=good_inputs(), parameters={"binary_data_output": True}),
                         None, SIG, 64)
    assert req.binary_outputs == {"sum", "flag"}


def test_bytes_tensors_in_binary_form() -> None:
    sig = Signature((TensorSpec("s", "BYTES", (-1,)),), (TensorSpec("o", "BYTES", (-1,)),))
    payload = b"".join(struct.pack("<I", len(w)) + w for w in (b"hi", b"there"))
    header = json.dumps({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(payload)}}]}).encode()
    req = decode_request(header + payload, len(header), sig, 64)
    assert list(req.inputs["s"]) == ["hi", "there"]


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"inputs": [{"name": "zz", "shape": [1], "datatype": "FP32", "data": [1]}]},
         ["unknown input 'zz'"]),
        ({"inputs": [{**good_inputs()[0], "datatype": "FP64"}, good_inputs()[1]]},
         ["input 'a'", "datatype"]),
        ({"inputs": [{**good_inputs()[0], "shape": [2, 4]}, good_inputs()[1]]},
         ["input 'a'", "shape [2, 4]"]),
        ({"inputs": [{**good_inputs()[0], "shape": [3, 3]}, good_inputs()[1]]},
         ["input 'a'", "6 values"]),
        ({"inputs": [good_inputs()[0]]}, ["missing input 'b'"]),
        ({"inputs": [{**good_inputs()[0], "data": ["x", "y", "z", 1, 2, 3]}, good_inputs()[1]]},
         ["input 'a'", "FP32"]),
        ({"inputs": [{**good_inputs()[0], "data": [[1, 2, 3], [4, 5]]}, good_inputs()[1]]},
         ["input 'a'"]),
        ({"inputs": []}, ["inputs"]),
        ({"inputs": [{**good_inputs()[0], "shape": [True, 3]}, good_inputs()[1]]},
         ["input 'a'", "non-negative integers"]),
        ({"inputs": [{**good_inputs()[0], "shape": [-1, 3]}, good_inputs()[1]]},
         ["input 'a'", "non-negative integers"]),
        ({"inputs": [{**good_inputs()[0], "shape": "2,3"}, good_inputs()[1]]},
         ["input 'a'", "non-negative integers"]),
        ({"inputs": [{**good_inputs()[0], "shape": [2.0, 3]}, good_inputs()[1]]},
         ["input 'a'", "non-negative integers"]),
        ({"inputs": [{**good_inputs()[0], "shape": [6]}, good_inputs()[1]]},
         ["input 'a'", "shape [6] does not match the model's [-1, 3]"]),
        ({"inputs": [good_inputs()[0], {**good_inputs()[1], "shape": [1, 1], "data": [1]}]},
         ["disagree on the batch size"]),
        ({"inputs": good_inputs(), "outputs": [{"name": "nope"}]}, ["unknown output 'nope'"]),
    ],
)
def test_bad_requests_name_what_is_wrong(doc: dict[str, object], words: list[str]) -> None:
    with pytest.raises(BadInput) as err:
        decode_request(json.dumps(doc).encode(), None, SIG, 64)
    for word in words:
        assert word in err.value.message


def test_unparseable_body_and_bad_binary_sizes() -> None:
    with pytest.raises(BadInput, match="not valid JSON"):
        decode_request(b"{nope", None, SIG, 64)
    header = json.dumps({"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
        {"name": "b", "shape": [2, 1], "datatype": "INT64", "data": [1, 2]},
    ]}).encode()
    with pytest.raises(BadInput, match="input 'a'.*runs past"):
        decode_request(header + b"\0" * 10, len(header), SIG, 64)
    with pytest.raises(BadInput, match="not claimed"):
        decode_request(header + b"\0" * 30, len(header), SIG, 64)
    with pytest.raises(BadInput, match="Inference-Header-Content-Length"):
        decode_request(header, len(header) + 5, SIG, 64)


def test_batch_limit() -> None:
    with pytest.raises(BadInput, match="more than the limit of 1"):
        decode_request(body(inputs=good_inputs()), None, SIG, 1)


def test_json_outputs_keep_every_value_nan_and_infinity_included() -> None:
    req = decode_request(body(inputs=good_inputs()), None, SIG, 64)
    values = np.array([[0.1, 1 / 3, 2.5e-8], [-7.0, 1e30, 3.0]], dtype=np.float32)
    data, n = encode_response("m", 1, req, {"sum": values, "flag": np.array([[True], [False]])})
    assert n is None
    doc = json.loads(data)
    assert doc["outputs"][1]["data"] == [True, False]
    # FP32 values written in their shortest form read back as the same FP32 values.
    np.testing.assert_array_equal(np.array(doc["outputs"][0]["data"], dtype=np.float32),
                                  values.ravel())
    odd = np.array([[np.nan, np.inf, -np.inf], [1.0, 2.0, 3.0]], dtype=np.float32)
    data, _ = encode_response("m", 1, req, {"sum": odd, "flag": np.array([[True], [False]])})
    assert b"NaN,Infinity,-Infinity" in data  # as Python's json writes them; never null
    # A non-contiguous output (a column of a batch) is written in row-major order too.
    wide = np.arange(12, dtype=np.float32).reshape(2, 6)[:, ::2]
    data, _ = encode_response("m", 1, req, {"sum": wide, "flag": np.array([[True], [False]])})
    assert json.loads(data)["outputs"][0]["data"] == [0, 2, 4, 6, 8, 10]


def test_null_in_a_string_leaves_finite_outputs_as_they_are() -> None:
    # orjson writes NaN as null; an id that says null is no NaN, and the values keep their
    # shortest FP32 form; a NaN beside such an id is still written as NaN, never null.
    req = decode_request(body(id="null", inputs=good_inputs()), None, SIG, 64)
    flag = np.array([[True], [False]])
    values = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]], dtype=np.float32)
    data, _ = encode_response("null", 1, req, {"sum": values, "flag": flag})
    assert b'"data":[0.1,0.2,0.3,1.0,2.0,3.0]' in data
    assert json.loads(data)["id"] == "null"
    odd = np.array([[0.1, np.nan, 0.3], [1.0, 2.0, 3.0]], dtype=np.float32)
    data, _ = encode_response("null", 1, req, {"sum": odd, "flag": flag})
    assert b"NaN" in data and data.count(b"null") == 2  # the id and the model's name
    # the same from a non-contiguous output, which goes to orjson as a list
    data, _ = encode_response("m", 1, req, {"sum": np.tile(odd, 2)[:, ::2], "flag": flag})
    assert b"NaN" in data and data.count(b"null") == 1


def test_requests_that_strict_json_refuses_are_still_read() -> None:
    # NaN and Infinity (which Python's json writes), a byte-order mark, and UTF-16.
    text = ('{"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", '
            '"data": [NaN, Infinity, 1]}, {"name": "b", "shape": [1, 1], "datatype": "INT64", '
            '"data": [2]}]}')
    for raw in (text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        req = decode_request(raw, None, SIG, 64)
        a = req.inputs["a"]
        assert np.isnan(a[0, 0]) and np.isinf(a[0, 1]) and a[0, 2] == 1
    with pytest.raises(BadInput, match="not valid JSON"):
        decode_request(b'{"inputs": [}', None, SIG, 64)
