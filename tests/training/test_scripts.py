"""Training scripts: the documented contract, and evaluation and parity that stay the
appliance's own."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from appliance.auth import Principal, Role
from appliance.datasets import add_dataset, get_dataset_version, load_table
from appliance.errors import BadInput, OperationFailed
from appliance.promotion import PromotionRefused, promote
from appliance.storage.home import Home
from appliance.training import get_run, reproduce_run, run_artifacts, run_steps, run_training
from appliance.training.features import labelled_rows
from appliance.training.trainer import split_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
OPERATOR = Principal(name="olga", role=Role.OPERATOR)


def documented(after: str, language: str) -> str:
    """The first ``language`` code block after the line ``after`` in docs/training.md."""
    text = DOC.read_text()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def write_points(path: Path, rows: int = 300, seed: int = 0) -> Path:
    """Four numeric columns and a label a/b/c given by which centre a row lies near."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0, 0, 1], [0, 2.0, 0, -1], [0, 0, 2.0, 0]])
    label = rng.integers(0, 3, size=rows)
    x = centres[label] + rng.normal(scale=0.9, size=(rows, 4))
    lines = ["x1,x2,x3,x4,label"]
    lines += [",".join(f"{v:.5f}" for v in x[i]) + f",{'abc'[label[i]]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def points(home: Home, tmp_path: Path) -> str:
    with home.db() as db:
        add_dataset(db, home.blobs, "points", write_points(tmp_path / "points.csv"),
                    target="label", actor="alice")
    return "points@1"


def script_recipe(folder: Path, script: str, **fields: object) -> Path:
    """A recipe file and its script, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(script)
    body: dict[str, object] = {"name": "points", "dataset": "points@1",
                               "task": "classification", "script": "train.py", "seed": 7,
                               "device": "cpu", "params": {}}
    body.update(fields)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


# A script that writes a fixed ONNX model (probabilities from x1..x3 by a softmax) and
# whatever the test asks of it: metrics lines, a reference, files. Needs only onnx.
FIXED = '''
import argparse, json, os, sys
import numpy as np
import onnx
from onnx import TensorProto, helper
p = argparse.ArgumentParser()
for a in ("--data", "--params", "--run", "--output"):
    p.add_argument(a, required=True)
args = p.parse_args()
params = json.load(open(args.params))
run = json.load(open(args.run))
w = np.zeros((4, 3), dtype=np.float32)
w[0, 0] = w[1, 1] = w[2, 2] = params.get("scale", 3.0)
x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])
y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 3])
wt = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], w.flatten().tolist())
g = helper.make_graph([helper.make_node("MatMul", ["features", "w"], ["z"]),
                       helper.make_node("Softmax", ["z"], ["probabilities"], axis=1)],
                      "g", [x], [y], [wt])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.save(m, os.path.join(args.output, "model.onnx"))
out = args.output
EXTRA
'''


def fixed(extra: str = "") -> str:
    return FIXED.replace("EXTRA", extra)


def test_the_documented_example_is_scored_by_the_appliance_and_gated(home, points, tmp_path):
    body = yaml.safe_load(documented("`points.yaml`:", "yaml"))
    folder = tmp_path / "example"
    folder.mkdir()
    (folder / "points.yaml").write_text(yaml.safe_dump(body))
    (folder / "train.py").write_text(documented("`train.py`, next to it:", "python"))
    events: list[dict] = []
    good = run_training(home, folder / "points.yaml", "alice", progress=events.append)
    lines = [e["line"] for e in events if e.get("event") == "output"]
    assert lines[0].startswith("epoch 1 train_loss")
    assert len([ln for ln in lines if ln.startswith("epoch ")]) == 40
    assert good.parity_max_abs_diff is not None and good.parity_max_abs_diff < 1e-4

    with home.db() as db:
        run = get_run(db, good.run_id)
        curves = run_steps(db, run.id)
        artifacts = run_artifacts(db, run.id)
        dv = get_dataset_version(db, points)
    # The recorded test metrics are what onnxruntime gives on the recorded test split.
    table = load_table(home.blobs, dv)
    test = split_rows(labelled_rows(table, "label", "classification"), run.recipe["split"],
                      7)["test"]
    x = np.stack([table.columns[c][test] for c in ("x1", "x2", "x3", "x4")], axis=1)
    session = ort.InferenceSession(home.blobs.read_bytes(run.onnx_digest or ""),
                                   providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": x.astype(np.float32)})
    labels = np.array(["abc".index(table.columns["label"][i]) for i in test])
    accuracy = float((probabilities.argmax(1) == labels).mean())
    assert run.metrics["test"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.8
    assert set(run.metrics["test"]) == {"accuracy", "log_loss", "f1_macro", "roc_auc"}
    assert run.metrics["rows"] == {"train": 210, "validation": 45, "test": 45}
    assert [s for s, _v in curves["train_loss"]] == list(range(1, 41))
    assert run.metrics["script"]["val_accuracy"] == curves["val_accuracy"][-1][1]
    assert [a["path"] for a in artifacts] == ["confusion_matrix.csv"]

    done = promote(home, good.model_version, OPERATOR)
    assert done.report.passed
    (folder / "worse.yaml").write_text(
        yaml.safe_dump({**body, "params": {**body["params"], "epochs": 0}}))
    bad = run_training(home, folder / "worse.yaml", "alice")
    with pytest.raises(PromotionRefused) as refused:
        promote(home, bad.model_version, OPERATOR)
    assert refused.value.report.failed == ["metric:accuracy:vs_production"]


def test_cli_train_wait_streams_the_script_output_and_runs_show_lists_artifacts(
        runner, points, tmp_path):
    path = script_recipe(tmp_path / "s", fixed(
        "print('hello from the script', flush=True)\n"
        "open(os.path.join(out, 'metrics.jsonl'), 'w').write("
        "'{\"step\": 1, \"train_loss\": 0.5}\\n{\"step\": 2, \"train_loss\": 0.25}\\n')\n"
        "os.makedirs(os.path.join(out, 'artifacts', 'plots'))\n"
        "open(os.path.join(out, 'artifacts', 'plots', 'loss.svg'), 'w').write('<svg/>')\n"))
    r = runner("train", str(path), "--wait")
    assert r.exit_code == 0, r.output
    assert "| hello from the script" in r.stdout.splitlines()
    assert "no reference.json: parity not checked" in r.stdout
    r = runner("runs", "show", "1")
    assert r.exit_code == 0, r.output
    assert "curve train_loss: 2 steps, last 0.25 at step 2" in r.stdout
    assert re.search(r"^artifact plots/loss.svg  6 bytes  sha256:[0-9a-f]{64}$", r.stdout, re.M)
    r = runner("runs", "artifact", "1", "plots/loss.svg")
    assert r.exit_code == 0 and r.stdout == "<svg/>"
    r = runner("runs", "artifact", "1", "nope.txt")
    assert r.exit_code == 2 or r.exit_code == 1
    assert "no artifact 'nope.txt'" in r.output and "plots/loss.svg" in r.output
    r = runner("runs", "logs", "1")
    assert r.exit_code == 0 and "hello from the script" in r.stdout.splitlines()


def test_output_reaches_progress_while_the_script_runs(home, points, tmp_path):
    flag = tmp_path / "seen"
    # The script waits until the test has seen its first line: buffered output would
    # reach the test only after the script ended, and the script would give up.
    path = script_recipe(tmp_path / "s", fixed(
        "print('first', flush=True)\n"
        "import time\n"
        f"deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    if time.monotonic() > deadline: sys.exit('never seen')\n"
        "    time.sleep(0.05)\n"
        "print('second')\n"))

    def progress(event: dict) -> None:
        if event.get("event") == "output" and event["line"] == "first":
            flag.touch()

    run_training(home, path, "alice", progress=progress)
    assert flag.exists()


def test_params_are_top_level_and_the_recorded_split_is_passed(home, points, tmp_path):
    path = script_recipe(tmp_path / "s", fixed(
        "import shutil\n"
        "shutil.copy(args.params, os.path.join(out, 'artifacts', 'params.json'))\n"
        "shutil.copy(args.run, os.path.join(out, 'artifacts', 'run.json'))\n"),
        params={"epochs": 8, "lr": 0.002}, split={"train": 0.6, "validation": 0.2, "test": 0.2})
    result = run_training(home, path, "alice")
    from appliance.training import read_artifact
    params = json.loads(read_artifact(home, result.run_id, "params.json"))
    told = json.loads(read_artifact(home, result.run_id, "run.json"))
    assert params == {"epochs": 8, "lr": 0.002}
    assert told["seed"] == 7 and told["device"] == "cpu" and told["dataset"] == "points@1"
    assert told["task"] == "classification" and told["classes"] == ["a", "b", "c"]
    assert told["target"] == "label" and told["features"] == ["x1", "x2", "x3", "x4"]
    with home.db() as db:
        table = load_table(home.blobs, get_dataset_version(db, points))
    want = split_rows(labelled_rows(table, "label", "classification"),
                      {"train": 0.6, "validation": 0.2, "test": 0.2}, 7)
    assert {k: told["split"][k] for k in want} == {k: v.tolist() for k, v in want.items()}
    assert result.metrics["rows"] == {"train": 180, "validation": 60, "test": 60}


@pytest.mark.parametrize("extra, message", [
    ("open(os.path.join(out, 'metrics.jsonl'), 'w').write('{\"step\": 3, \"test_accuracy\": 1.0}\\n')",
     "metrics.jsonl line 1: metric name 'test_accuracy' is reserved"),
    ("open(os.path.join(out, 'metrics.jsonl'), 'w').write('{\"step\": 0, \"parity_max_abs_diff\": 0.0}\\n')",
     "metric name 'parity_max_abs_diff' is reserved"),
    ("open(os.path.join(out, 'metrics.jsonl'), 'w').write('{\"step\": 0, \"test\": {\"accuracy\": 1}}\\n')",
     "metric name 'test' is reserved"),
    ("json.dump({'test': {'accuracy': 1.0}, 'parity_max_abs_diff': 0.0}, "
     "open(os.path.join(out, 'metrics.json'), 'w'))",
     "wrote metrics.json: the appliance measures the model itself"),
    ("open(os.path.join(out, 'metrics.jsonl'), 'w').write('{\"train_loss\": 1}\\n')",
     "'step' must be a whole number"),
])
def test_a_script_can_not_report_what_the_gates_read(home, points, tmp_path, extra, message):
    path = script_recipe(tmp_path / "s", fixed(extra))
    with pytest.raises(OperationFailed, match=re.escape(message)):
        run_training(home, path, "alice")
    with home.db() as db:
        assert get_run(db, 1).status == "failed"


def test_parity_is_checked_against_the_scripts_reference_by_the_appliance(home, points,
                                                                         tmp_path):
    # A reference that is not what the model computes fails the run, whatever it claims.
    path = script_recipe(tmp_path / "bad", fixed(
        "n = len(run['split']['test'])\n"
        "json.dump({'probabilities': [[1.0, 0.0, 0.0]] * n}, "
        "open(os.path.join(out, 'reference.json'), 'w'))\n"))
    with pytest.raises(OperationFailed, match="parity check failed: onnxruntime differs from"):
        run_training(home, path, "alice")
    # Without a reference the model registers, but the parity gate refuses it.
    path = script_recipe(tmp_path / "none", fixed())
    result = run_training(home, path, "alice")
    assert result.parity_max_abs_diff is None
    with pytest.raises(PromotionRefused) as refused:
        promote(home, result.model_version, OPERATOR)
    assert refused.value.report.failed == ["onnx_checker_parity"]


def test_a_model_without_task_is_recorded_but_not_promoted(home, points, tmp_path):
    path = script_recipe(tmp_path / "s", fixed(), task=None)
    body = yaml.safe_load(path.read_text())
    del body["task"]
    path.write_text(yaml.safe_dump(body))
    result = run_training(home, path, "alice")
    assert set(result.metrics) == {"rows"}
    with pytest.raises(PromotionRefused, match="metric"):
        promote(home, result.model_version, OPERATOR)


def test_a_code_folder_is_snapshotted_and_reproduced_from_the_snapshot(home, points, tmp_path):
    folder = tmp_path / "project"
    (folder / "src" / "pkg").mkdir(parents=True)
    (folder / "src" / "pkg" / "__init__.py").write_text("SCALE = 3.0\n")
    (folder / "src" / "__pycache__").mkdir()
    (folder / "src" / "__pycache__" / "junk.pyc").write_bytes(b"\0" * 10)
    (folder / "src" / "train.py").write_text(fixed().replace(
        'params.get("scale", 3.0)', '__import__("pkg").SCALE'))
    recipe = {"name": "points", "dataset": "points@1", "task": "classification",
              "code": "src", "script": "train.py", "seed": 7, "device": "cpu"}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    first = run_training(home, folder / "recipe.yaml", "alice")
    with home.db() as db:
        run = get_run(db, first.run_id)
    assert run.recipe["code"] == "src"
    manifest = json.loads(home.blobs.read_bytes(run.recipe["code_manifest_sha256"]))
    assert sorted(manifest) == ["pkg/__init__.py", "train.py"]
    # Editing the folder afterwards changes neither what the run reproduces ...
    (folder / "src" / "pkg" / "__init__.py").write_text("SCALE = 1.0\n")
    assert reproduce_run(home, first.run_id, "alice").verdict == "identical"
    # ... while a new run of the edited folder hashes, and trains, differently.
    second = run_training(home, folder / "recipe.yaml", "alice")
    with home.db() as db:
        assert get_run(db, second.run_id).code_hash != run.code_hash
    assert second.weights_digest != first.weights_digest


def test_a_code_folder_over_the_limit_is_refused(home, points, tmp_path, monkeypatch):
    from appliance.training import recipe as recipe_module
    monkeypatch.setattr(recipe_module, "MAX_CODE_BYTES", 1000)
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "train.py").write_text(fixed())
    (folder / "src" / "data.bin").write_bytes(b"x" * 2000)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({
        "name": "points", "dataset": "points@1", "code": "src", "script": "train.py"}))
    with pytest.raises(BadInput, match="recipe field 'code': .* holds more than"):
        run_training(home, folder / "recipe.yaml", "alice")


def test_python_names_the_interpreter_and_records_its_packages(home, points, tmp_path):
    path = script_recipe(tmp_path / "s", fixed("print(sys.executable)"),
                         python=sys.executable)
    lines: list[str] = []
    result = run_training(home, path, "alice",
                          progress=lambda e: lines.append(e.get("line", "")))
    with home.db() as db:
        env = get_run(db, result.run_id).environment
    assert env["script_python"]["packages"]["onnx"]
    assert env["script_python"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert str(Path(sys.executable).absolute()) in lines


def test_a_missing_interpreter_or_module_is_said_plainly(runner, home, points, tmp_path):
    path = script_recipe(tmp_path / "a", fixed(), python=str(tmp_path / "no-such-venv"))
    r = runner("train", str(path))
    assert r.exit_code == 2
    assert "recipe field 'python'" in r.output and "installs nothing" in r.output
    path = script_recipe(tmp_path / "b", "import appliance_no_such_module\n")
    r = runner("train", str(path))
    assert r.exit_code == 1
    assert ("needs the module 'appliance_no_such_module', which" in r.output
            and "name that environment with 'python:'" in r.output)


@pytest.mark.parametrize("fields, message", [
    ({"task": "ranking"}, "recipe field 'task': 'ranking' is not one of"),
    ({"classes": ["a"]}, "recipe field 'classes' must be a list of at least 2"),
    ({"task": "regression", "classes": ["a", "b"]}, "'classes' needs 'task: classification'"),
    ({"code": "missing"}, "recipe field 'code': "),
    ({"code": "."}, "recipe field 'script': train.py is not in the code folder"),
])
def test_bad_script_fields_name_the_field(runner, points, tmp_path, fields, message):
    path = script_recipe(tmp_path / "s", fixed(), **fields)
    if fields.get("code") == ".":
        (tmp_path / "s" / "train.py").rename(tmp_path / "s" / "other.py")
    r = runner("train", str(path))
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_the_train_job_logs_each_script_line_as_it_comes(home, points, tmp_path):
    from appliance.config import parse_config
    from appliance.jobs.training import run_train_job
    from appliance.queue.context import JobContext

    flag = tmp_path / "seen"
    path = script_recipe(tmp_path / "s", fixed(
        "print('first', flush=True)\n"
        "import time\n"
        "deadline = time.monotonic() + 60\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    if time.monotonic() > deadline: sys.exit('never seen')\n"
        "    time.sleep(0.05)\n"))
    logged: list[str] = []

    class Recording(JobContext):
        def log(self, message: str) -> None:
            logged.append(message)
            if message == "| first":
                flag.touch()

    (tmp_path / "job" / "work").mkdir(parents=True)
    ctx = Recording(job_id=1, kind="train", params={"recipe": str(path)}, attempt=1,
                    workdir=tmp_path / "job" / "work", home=home.root, config=parse_config({}))
    result = run_train_job(ctx)
    assert result["model_version"] == "points@1"
    assert "| first" in logged
