"""The registry: importing ONNX models, references, aliases and their history, tags."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from appliance import registry
from appliance.errors import BadInput, NotFound


def onnx_file(path: Path, scale: float = 2.0) -> Path:
    """y = x * scale, x FP32 [-1, 3]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def audit_rows(db, action: str) -> list[dict]:
    return list(db.query("SELECT target, entry FROM audit_log WHERE action = ? ORDER BY seq",
                         [action]))


def test_import_registers_versions_with_signature(runner, tmp_path, db) -> None:
    r = runner("models", "import", "scaler", str(onnx_file(tmp_path / "a.onnx")))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "scaler@1"
    r = runner("models", "import", "scaler", str(onnx_file(tmp_path / "b.onnx", 3.0)))
    assert r.stdout.strip() == "scaler@2"
    mv = registry.resolve(db, "scaler@1")
    assert mv.signature["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert mv.signature["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert mv.signature["feature_names"] == ["x"] and mv.source == "import"
    assert [r["target"] for r in audit_rows(db, "model.version.import")] == [
        "model:scaler@1", "model:scaler@2"]
    shown = json.loads(runner("models", "show", "scaler@2", "--json").stdout)
    assert shown["model_version"]["version"] == 2
    listed = json.loads(runner("models", "list", "--json").stdout)
    assert [(m["name"], m["versions"], m["latest"]) for m in listed] == [("scaler", 2, 2)]


def test_import_refuses_what_is_not_a_working_model(runner, tmp_path, db) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    r = runner("models", "import", "m", str(junk))
    assert r.exit_code == 2 and "junk.onnx" in r.stderr
    # Valid to the checker, but it fails at run time: Mul of shapes [2] and [3].
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    r = runner("models", "import", "m", str(bad))
    assert r.exit_code == 2 and ("onnx.checker" in r.stderr or "test inference" in r.stderr)
    assert db.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0] == 0


def test_aliases_move_and_history_answers_which_version_at_time_t(runner, tmp_path, db) -> None:
    for scale in (1.0, 2.0, 3.0):
        runner("models", "import", "m", str(onnx_file(tmp_path / f"{scale}.onnx", scale)))
    before = registry.alias_fingerprint(db)
    r = runner("models", "alias", "m@1", "candidate")
    assert r.exit_code == 0 and "- -> 1" in r.stdout
    t1 = registry.alias_history(db, "m")[-1]["at"]
    time.sleep(0.01)
    runner("models", "alias", "m@3", "candidate", "--reason", "better")
    runner("models", "alias", "m@2", "staging")
    assert registry.alias_fingerprint(db) == before + 3
    same = runner("models", "alias", "m@3", "candidate")
    assert "already points at 3" in same.stdout
    assert registry.alias_fingerprint(db) == before + 3
    assert registry.resolve(db, "m").version == 3
    assert registry.resolve(db, "m@staging").version == 2
    history = json.loads(runner("models", "history", "m", "--json").stdout)
    assert [(h["alias"], h["previous"], h["version"]) for h in history] == [
        ("candidate", None, 1), ("candidate", 1, 3), ("staging", None, 2)]
    assert history[1]["reason"] == "better" and history[0]["actor"].startswith("local:")
    assert registry.alias_at(db, "m", "candidate", t1) == 1
    r = runner("models", "history", "m", "--alias", "candidate", "--at", "2000-01-01T00:00:00Z")
    assert "had no alias 'candidate'" in r.stdout
    assert registry.alias_at(db, "m", "candidate", "2999-01-01T00:00:00+00:00") == 3
    t2 = registry.alias_history(db, "m", "candidate")[-1]["at"]
    assert t2 > t1 and registry.alias_at(db, "m", "candidate", t2) == 3
    actions = audit_rows(db, "model.alias.set")
    assert len(actions) == 3
    aliases = {(a["name"], a["alias"]): a["version"] for a in registry.list_aliases(db)}
    assert aliases == {("m", "candidate"): 3, ("m", "staging"): 2}
    runner("models", "unalias", "m", "staging")
    assert registry.alias_history(db, "m", "staging")[-1]["version"] is None
    with pytest.raises(NotFound, match="no alias 'staging'"):
        registry.resolve(db, "m@staging")


def test_serving_aliases_move_only_through_promotion(runner, tmp_path, db) -> None:
    runner("models", "import", "m", str(onnx_file(tmp_path / "a.onnx")))
    for alias in ("production", "shadow", "canary"):
        r = runner("models", "alias", "m@1", alias)
        assert r.exit_code == 2 and "appliance models promote" in r.stderr, r.stderr
        r = runner("models", "unalias", "m", alias)
        assert r.exit_code == 2 and alias in r.stderr
    assert registry.list_aliases(db) == []


def test_alias_move_and_its_audit_entry_commit_together(home, db, tmp_path) -> None:
    registry.import_model(db, home.blobs, "m", onnx_file(tmp_path / "a.onnx"), actor="t")
    db.execute("DROP TABLE audit_log")
    with pytest.raises(Exception, match="audit_log"):
        registry.set_alias(db, "m", 1, "production", "t")
    assert db.execute("SELECT COUNT(*) FROM alias_history").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM aliases").fetchone()[0] == 0


def test_bad_references_and_unknown_models(runner, db) -> None:
    with pytest.raises(BadInput):
        registry.parse_ref("m@0")
    with pytest.raises(BadInput):
        registry.parse_ref("@1")
    assert registry.parse_ref("m@candidate").alias == "candidate"
    assert registry.parse_ref("m@12").version == 12
    r = runner("models", "show", "ghost@1")
    assert r.exit_code == 2 and "model ghost does not exist" in r.stderr
    r = runner("models", "alias", "ghost@1", "9lives")
    assert r.exit_code == 2 and "invalid alias" in r.stderr


def test_tags_and_descriptions_are_audited(runner, tmp_path, db) -> None:
    runner("models", "import", "m", str(onnx_file(tmp_path / "a.onnx")))
    r = runner("models", "tag", "m@1", "owner=risk", "tier=gold")
    assert r.exit_code == 0 and "owner=risk" in r.stdout
    runner("models", "tag", "m@1", "tier=")
    runner("models", "describe", "m", "the scaler")
    runner("models", "describe", "m@1", "first cut")
    mv = registry.resolve(db, "m@1")
    assert mv.tags == {"owner": "risk"} and mv.description == "first cut"
    assert registry.model_summary(db, "m")["description"] == "the scaler"
    assert len(audit_rows(db, "model.version.tag")) == 3
    assert len(audit_rows(db, "model.describe")) == 2
    r = runner("models", "tag", "m@1", "novalue")
    assert r.exit_code == 2
