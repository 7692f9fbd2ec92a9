"""Classifiers whose probabilities end in a ZipMap (skl2onnx's and onnxmltools' default):
imported and served as a tensor, with the class labels in the model's metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from helpers.promotion import registry_server
from helpers.tabular import logistic_onnx

from appliance import registry
from appliance.registry import set_alias


def test_zipmap_output_is_imported_as_a_tensor_with_its_classes(runner, tmp_path, db,
                                                                home) -> None:
    path = logistic_onnx(tmp_path / "zip.onnx", 2.0, 1.0, -0.2, classes=["no", "yes"],
                         zipmap=True)
    r = runner("models", "import", "m", str(path))
    assert r.exit_code == 0, r.output
    mv = registry.resolve(db, "m@1")
    outputs = {o["name"]: o for o in mv.signature["outputs"]}
    assert outputs["probabilities"] == {"name": "probabilities", "datatype": "FP32",
                                        "shape": [-1, 2]}
    assert "output_probability" not in outputs and mv.signature["classes"] == ["no", "yes"]
    assert mv.signature["imported_from"]["sha256"] != mv.onnx_digest
    stored = onnx.load_from_string(home.blobs.read_bytes(mv.onnx_digest))
    assert {p.key: json.loads(p.value) for p in stored.metadata_props} == {
        "classes": ["no", "yes"]}
    again = runner("models", "import", "m", str(path))
    assert again.stdout.startswith("m@1  (already registered")


def test_tritonclient_gets_the_zipmap_numbers_as_a_tensor(home, tmp_path) -> None:
    import tritonclient.http as triton

    path = logistic_onnx(tmp_path / "zip.onnx", 2.0, 1.0, -0.2, zipmap=True)
    db = home.db()
    try:
        mv = registry.import_model(db, home.blobs, "m", path, actor="test")
        assert mv.signature["classes"] == ["0", "1"]
        set_alias(db, "m", 1, "production", "test")
    finally:
        db.close()
    rng = np.random.default_rng(5)
    x1, x2 = (rng.standard_normal((7, 1)).astype(np.float32) for _ in range(2))
    original = ort.InferenceSession(str(path)).run(None, {"x1": x1, "x2": x2})
    expected = np.array([[row[0], row[1]] for row in original[1]], dtype=np.float32)
    server, _, _ = registry_server(home)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        inputs = []
        for name, values in (("x1", x1), ("x2", x2)):
            inp = triton.InferInput(name, list(values.shape), "FP32")
            inp.set_data_from_numpy(values)
            inputs.append(inp)
        result = client.infer("m", inputs)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=0,
                                   atol=1e-7)
        assert result.as_numpy("label").tolist() == original[0].tolist()
    finally:
        client.close()
        server.stop()


def test_an_output_that_is_no_tensor_and_no_zipmap_says_what_to_change(runner,
                                                                        tmp_path) -> None:
    from onnx import TensorProto, helper

    seq = helper.make_value_info("out", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [-1])))
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1])], [seq])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "seq.onnx"
    path.write_bytes(model.SerializeToString())
    r = runner("models", "import", "m", str(path))
    assert r.exit_code == 2
    assert "'out' is a sequence, not a tensor" in r.stderr and "'zipmap': False" in r.stderr


def test_v2_metadata_names_the_class_of_each_probability_column(home, tmp_path) -> None:
    import tritonclient.http as triton

    from appliance.registry.signing import sign_in_transaction
    from appliance.storage.db import immediate

    path = logistic_onnx(tmp_path / "zip.onnx", 2.0, 1.0, -0.2, classes=["no", "yes"],
                         zipmap=True)
    db = home.db()
    try:
        mv = registry.import_model(db, home.blobs, "m", path, actor="test")
        set_alias(db, "m", 1, "production", "test")
        with immediate(db):  # a signed version may also be named by its number
            sign_in_transaction(db, home.keys_dir, mv, home.blobs.read_bytes(mv.onnx_digest),
                                actor="test")
    finally:
        db.close()
    server, _, _ = registry_server(home)
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        for meta in (client.get_model_metadata("m"),
                     client.get_model_metadata("m", model_version="1")):
            outputs = {o["name"]: o for o in meta["outputs"]}
            assert outputs["probabilities"]["parameters"] == {"classes": ["no", "yes"]}
            assert "parameters" not in outputs["label"]
            assert meta["parameters"]["version"] == "1"
    finally:
        client.close()
        server.stop()
