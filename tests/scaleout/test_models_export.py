"""`appliance models export`: Triton and KServe layouts, read back with Triton's own schema."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import onnxruntime as ort
import pytest
import tritonclient
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from google.protobuf import text_format
from onnx import TensorProto, helper

from appliance import registry
from appliance.errors import Conflict, OperationFailed
from appliance.registry.export import export_model
from appliance.registry.signing import PUBLIC_FILE, sign_in_transaction
from appliance.storage.db import Database, immediate
from appliance.storage.home import Home


def triton_schema() -> ModuleType:
    """Triton's ModelConfig protobuf, as tritonclient ships it (loaded without its gRPC
    client, which is not installed)."""
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path: Path) -> Any:
    schema = triton_schema()
    return schema, text_format.Parse(path.read_text(), schema.ModelConfig())


def batched_model(path: Path) -> Path:
    """x FP32 [N, 3], k INT64 [N, 1] -> total FP32 [N] (sum of x), k_out INT64 [N, 1]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, ["batch", 1])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])
    k_out = helper.make_tensor_value_info("k_out", TensorProto.INT64, ["batch", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
         helper.make_node("Identity", ["k"], ["k_out"])],
        "g", [x, k], [total, k_out], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def fixed_model(path: Path) -> Path:
    """x FP64 [2, 3] -> y FP64 [2, 3]: no batch dimension."""
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def registered(db: Database, home: Home, tmp_path: Path, name: str = "scorer",
               make: Any = batched_model) -> registry.ModelVersion:
    mv = registry.import_model(db, home.blobs, name, str(make(tmp_path / f"{name}.onnx")),
                               actor="alice")
    registry.set_alias(db, name, mv.version, "staging", "alice")
    return registry.resolve(db, f"{name}@staging")


def exports(db: Database) -> list[dict[str, Any]]:
    return [json.loads(r["entry"]) for r in db.query(
        "SELECT entry FROM audit_log WHERE action = 'model.version.export' ORDER BY seq")]


def test_triton_config_matches_the_models_signature(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    mv = registered(db, home, tmp_path)
    out = tmp_path / "repo"
    done = export_model(db, home.blobs, home.keys_dir, "scorer@staging", out, "triton",
                        actor="bob", max_batch_size=32, queue_delay_us=200)
    assert done.path == out / "scorer" and not done.signed
    schema, config = load_config(out / "scorer" / "config.pbtxt")
    assert config.name == "scorer" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 200
    names = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}
    for tensors, specs in ((config.input, mv.signature["inputs"]),
                           (config.output, mv.signature["outputs"])):
        assert [t.name for t in tensors] == [s["name"] for s in specs]
        for t, s in zip(tensors, specs, strict=True):
            assert schema.DataType.Name(t.data_type) == names[s["datatype"]]
            assert s["shape"][0] == -1  # the batch dimension Triton adds back
            if len(s["shape"]) > 1:
                assert list(t.dims) == s["shape"][1:] and not t.HasField("reshape")
            else:  # one value per row: [1] reshaped to the model's [N]
                assert list(t.dims) == [1] and list(t.reshape.shape) == []
    # The version folder holds the registered bytes, and onnxruntime runs them.
    model = out / "scorer" / str(mv.version) / "model.onnx"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == mv.onnx_digest
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [t.name for t in config.input]
    provenance = json.loads((out / "scorer" / "provenance.json").read_text())
    assert provenance["onnx_sha256"] == mv.onnx_digest and provenance["signed"] is False
    assert provenance["version"] == mv.version and provenance["asked_as"] == "scorer@staging"
    [entry] = exports(db)
    assert entry["actor"] == "bob" and entry["target"] == f"model:{mv.ref}"
    assert entry["details"]["format"] == "triton"
    assert entry["details"]["onnx"] == f"sha256:{mv.onnx_digest}"
    assert entry["seq"] == provenance["audit_seq"] == done.audit_seq
    assert sorted(p.name for p in out.iterdir()) == ["scorer"]  # no temporary left


def test_a_model_without_a_batch_dimension_is_exported_unbatched(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    mv = registered(db, home, tmp_path, "fixed", fixed_model)
    export_model(db, home.blobs, home.keys_dir, "fixed@staging", tmp_path / "repo", "triton",
                 actor="bob")
    schema, config = load_config(tmp_path / "repo" / "fixed" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == mv.signature["inputs"][0]["shape"] == [2, 3]
    assert schema.DataType.Name(config.output[0].data_type) == "TYPE_FP64"


def test_kserve_layout_is_a_triton_repository_with_an_inference_service(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    mv = registered(db, home, tmp_path)
    done = export_model(db, home.blobs, home.keys_dir, "scorer@staging", tmp_path / "out",
                        "kserve", actor="bob")
    root = tmp_path / "out" / "scorer"
    assert set(done.files) == {
        "repository/scorer/config.pbtxt", f"repository/scorer/{mv.version}/model.onnx",
        "inferenceservice.yaml", "provenance.json"}
    _, config = load_config(root / "repository" / "scorer" / "config.pbtxt")
    assert config.name == "scorer" and config.max_batch_size == 64
    isvc = yaml.safe_load((root / "inferenceservice.yaml").read_text())
    assert isvc["kind"] == "InferenceService"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "onnx" and model["protocolVersion"] == "v2"
    assert exports(db)[0]["details"]["format"] == "kserve"


def test_a_signed_version_travels_with_a_signature_that_verifies_outside(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    mv = registered(db, home, tmp_path)
    data = home.blobs.read_bytes(mv.onnx_digest)
    with immediate(db):
        sig = sign_in_transaction(db, home.keys_dir, mv, data, actor="carol")
    done = export_model(db, home.blobs, home.keys_dir, "scorer@staging", tmp_path / "repo",
                        "triton", actor="bob")
    assert done.signed
    root = tmp_path / "repo" / "scorer"
    message = (root / "signed-message.txt").read_bytes()
    exported = (root / str(mv.version) / "model.onnx").read_bytes()
    # What `openssl pkeyutl -verify -pubin -inkey model-signing.pub.pem -rawin` checks:
    assert f"sha256:{hashlib.sha256(exported).hexdigest()}".encode() in message
    key = load_pem_public_key((root / "model-signing.pub.pem").read_bytes())
    key.verify((root / "model.onnx.sig").read_bytes(), message)  # raises when it does not
    assert json.loads((root / "provenance.json").read_text())["signature"]["key_id"] == \
        sig.key_id
    assert exports(db)[0]["details"]["key_id"] == sig.key_id


def test_a_signature_that_does_not_verify_refuses_the_export_and_writes_nothing(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    mv = registered(db, home, tmp_path)
    with immediate(db):
        sign_in_transaction(db, home.keys_dir, mv, home.blobs.read_bytes(mv.onnx_digest),
                            actor="carol")
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                   PublicFormat.Raw)
    (home.keys_dir / PUBLIC_FILE).write_text(base64.b64encode(other).decode())
    with pytest.raises(OperationFailed, match="does not trust"):
        export_model(db, home.blobs, home.keys_dir, "scorer@staging", tmp_path / "repo",
                     "triton", actor="bob")
    assert not (tmp_path / "repo").exists()
    assert exports(db) == []


def test_an_existing_destination_is_refused(
    db: Database, home: Home, tmp_path: Path,
) -> None:
    registered(db, home, tmp_path)
    export_model(db, home.blobs, home.keys_dir, "scorer@staging", tmp_path / "repo", "triton",
                 actor="bob")
    with pytest.raises(Conflict, match="already exists"):
        export_model(db, home.blobs, home.keys_dir, "scorer@staging", tmp_path / "repo",
                     "kserve", actor="bob")
    assert len(exports(db)) == 1
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["scorer"]


def test_the_cli_exports_and_names_what_it_wrote(
    db: Database, home: Home, tmp_path: Path, runner: Any,
) -> None:
    mv = registered(db, home, tmp_path)
    r = runner("models", "export", "scorer@staging", str(tmp_path / "repo"), "--format",
               "triton")
    assert r.exit_code == 0, r.output
    assert f"{mv.ref} exported for triton" in r.stdout and "not signed" in r.stdout
    r = runner("models", "export", "scorer@staging", str(tmp_path / "k"), "--format",
               "kserve", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["format"] == "kserve"
    r = runner("models", "export", "scorer@staging", str(tmp_path / "x"), "--format", "tf")
    assert r.exit_code == 2 and "tf" in r.output
    r = runner("models", "export", "scorer@nope", str(tmp_path / "x"), "--format", "triton")
    assert r.exit_code != 0 and "nope" in r.output
    assert len(exports(db)) == 2
