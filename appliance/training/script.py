"""User training scripts: the contract, and how the appliance runs and then measures one.

A recipe with ``script: train.py`` runs, in a fresh working directory::

    PYTHON train.py --data DATA.csv --params params.json --run run.json --output out/

``params.json`` is the recipe's ``params`` as they are; ``run.json`` holds what
the appliance decided: ``seed``, ``device``, ``dataset``, ``target``,
``features``, ``task``, ``classes`` and ``split`` (the train, validation and
test row indices of the recorded split). The script writes ``out/model.onnx``,
may write ``out/metrics.jsonl`` (``{"step": N, "name": value, ...}`` lines),
``out/reference.json`` (its own outputs on the test rows, for the parity check)
and any files under ``out/artifacts/``. It must not report the metrics the
gates read: the appliance scores the ONNX file itself on the recorded split,
and checks parity itself. docs/training.md is the user's version of this.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.datasets.table import Table
from appliance.errors import BadInput, OperationFailed
from appliance.onnxtools.models import check_model, probe_inference, signature_of
from appliance.training import features as feat
from appliance.training import scoring
from appliance.training.environment import python_path
from appliance.training.export import weights_digest
from appliance.training.recipe import Recipe
from appliance.training.trainer import Outcome, Progress, resolve_device, split_rows

# What the appliance measures and the gates read; a script may not report these itself.
RESERVED = frozenset({"train", "validation", "test", "rows", "script", "step"})
RESERVED_PREFIXES = ("test", "parity")
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")


def reserved(name: str) -> bool:
    return name in RESERVED or name.startswith(RESERVED_PREFIXES)


def prepare(table: Table, recipe: Recipe, target: str | None) -> dict[str, Any]:
    """What the script is told in run.json, less the device: features, task, classes, split."""
    task = recipe.task
    if task is not None and target is None:
        raise BadInput(f"recipe field 'task': {task} needs a target; add 'target: COLUMN'")
    if target is not None:
        features = feat.choose_features(table, target, recipe.features)
    else:
        features = list(recipe.features or table.names)
    rows = (feat.labelled_rows(table, target, task) if task is not None and target is not None
            else np.arange(len(next(iter(table.columns.values()), []))))
    splits = split_rows(rows, recipe.split, recipe.seed)
    classes: list[str] | None = None
    if task == "classification" and target is not None:
        labels = feat.label_strings(table, target)
        classes = recipe.classes or sorted({label for i in rows
                                            if (label := labels[i]) is not None})
    return {"target": target, "features": features, "task": task, "classes": classes,
            "splits": splits}


def read_metrics(path: Path, script: str) -> list[tuple[int, str, float]]:
    """The ``(step, name, value)`` rows of metrics.jsonl; OperationFailed naming the line."""
    steps: list[tuple[int, str, float]] = []
    if not path.is_file():
        return steps
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{script} wrote metrics.jsonl line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise OperationFailed(f"{where}: not JSON") from exc
        if not isinstance(entry, dict):
            raise OperationFailed(f"{where}: not a JSON object")
        step = entry.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise OperationFailed(f"{where}: 'step' must be a whole number >= 0")
        for name, value in entry.items():
            if name == "step":
                continue
            if reserved(name):
                raise OperationFailed(
                    f"{where}: metric name '{name}' is reserved: the appliance measures the "
                    "train, validation and test splits and parity itself, on the ONNX model; "
                    "log training metrics under other names (train_loss, val_accuracy, ...)")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OperationFailed(f"{where}: '{name}' is not a number")
            steps.append((step, name, float(value)))
    return steps


def read_artifacts(folder: Path, script: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    if not folder.is_dir():
        return found
    total = 0
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        total += len(data)
        if total > MAX_ARTIFACT_BYTES:
            raise OperationFailed(f"{script} wrote more than "
                                  f"{MAX_ARTIFACT_BYTES // (1024 * 1024)} MiB under artifacts/")
        found[path.relative_to(folder).as_posix()] = data
    return found


def _stream(command: list[str], cwd: Path, env: dict[str, str], progress: Progress,
            log: list[str]) -> int:
    """Run the script, handing each line of its output to ``progress`` as it comes."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    try:
        pipe = proc.stdout
        if pipe is None:
            raise OperationFailed("the training script's output could not be read")
        for raw in pipe:
            line = raw.rstrip("\n")
            log.append(line)
            progress({"event": "output", "line": line})
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _model_signature(onnx_bytes: bytes, table: Table, info: dict[str, Any],
                     script: str) -> dict[str, Any]:
    signature = signature_of(onnx_bytes)
    inputs = [spec["name"] for spec in signature.get("inputs", [])]
    if info["task"] is not None and not all(name in table.columns for name in inputs):
        if len(inputs) != 1:
            raise OperationFailed(
                f"model.onnx from {script} takes inputs {inputs}: name each input after a "
                "column, or take one tensor [rows, features] in run.json's feature order")
        signature["feature_order"] = list(info["features"])
    signature.update(target=info["target"], task=info["task"])
    if info["classes"] is not None:
        signature["classes"] = list(info["classes"])
    return signature


def _parity(onnx_bytes: bytes, signature: dict[str, Any], table: Table, rows: np.ndarray,
            reference: Path, tolerance: float, script: str) -> float:
    try:
        wanted = json.loads(reference.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OperationFailed(f"{script} wrote reference.json that is not JSON") from exc
    outputs = [o["name"] for o in signature.get("outputs", [])]
    if not isinstance(wanted, dict) or not wanted or set(wanted) - set(outputs):
        raise OperationFailed(f"{script} wrote reference.json that is not an object of the "
                              f"model's outputs {outputs} to their values on the test rows")
    got = scoring.run_model(onnx_bytes, signature, table, rows, list(wanted))
    worst = 0.0
    for name, values in wanted.items():
        try:
            expected = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise OperationFailed(f"reference.json: '{name}' is not an array of numbers") from exc
        actual = got[name].astype(np.float64)
        if expected.shape != actual.shape:
            raise OperationFailed(f"reference.json: '{name}' has shape {list(expected.shape)}, "
                                  f"the model's output on the {len(rows)} test rows "
                                  f"{list(actual.shape)}")
        diff = np.abs(actual - expected)
        worst = max(worst, float(np.nanmax(diff)) if diff.size else 0.0)
    if worst > tolerance or not math.isfinite(worst):
        raise OperationFailed(f"parity check failed: onnxruntime differs from {script}'s "
                              f"reference.json by {worst:.3g} on the test split (tolerance "
                              f"{tolerance:g})")
    return worst


def run_script(data: bytes, table: Table, recipe: Recipe, target: str | None,
               dataset_ref: str, progress: Progress, *, parity_tolerance: float) -> Outcome:
    if recipe.script is None or recipe.script_bytes is None:
        raise BadInput("recipe names no script")
    info = prepare(table, recipe, target)
    device = resolve_device(recipe.device)
    python = python_path(recipe.python)
    files = recipe.code_files if recipe.code_files is not None else {
        Path(recipe.script).name: recipe.script_bytes}
    script = recipe.script if recipe.code_files is not None else Path(recipe.script).name
    splits = info["splits"]
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="appliance-run-") as tmp:
        work = Path(tmp)
        code = work / "code"
        for rel, body in files.items():
            (code / rel).parent.mkdir(parents=True, exist_ok=True)
            (code / rel).write_bytes(body)
        (work / "data.csv").write_bytes(data)
        (work / "params.json").write_text(json.dumps(recipe.params, sort_keys=True))
        (work / "run.json").write_text(json.dumps({
            "seed": recipe.seed, "device": device, "dataset": dataset_ref,
            "target": info["target"], "features": info["features"], "task": info["task"],
            "classes": info["classes"],
            "split": {k: [int(i) for i in v] for k, v in splits.items()},
        }, sort_keys=True))
        out = work / "out"
        (out / "artifacts").mkdir(parents=True)
        env = {**os.environ, "PYTHONHASHSEED": str(recipe.seed), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(code)}
        progress({"event": "script", "script": recipe.script, "python": python})
        status = _stream(
            [python, str(code / script), "--data", str(work / "data.csv"),
             "--params", str(work / "params.json"), "--run", str(work / "run.json"),
             "--output", str(out)], code, env, progress, log)
        if status != 0:
            missing = next((m.group(1) for line in log for m in [_MISSING.search(line)] if m),
                           None)
            if missing:
                raise OperationFailed(
                    f"training script {recipe.script} needs the module '{missing}', which "
                    f"{python} does not have. The appliance installs nothing at run time: "
                    "install it into a virtual environment on this machine and name that "
                    "environment with 'python:' in the recipe")
            final = log[-1] if log else "no output"
            raise OperationFailed(f"training script {recipe.script} exited with status "
                                  f"{status}: {final}")
        if (out / "metrics.json").exists():
            raise OperationFailed(f"{recipe.script} wrote metrics.json: the appliance measures "
                                  "the model itself; log training metrics to metrics.jsonl")
        model_path = out / "model.onnx"
        if not model_path.is_file():
            raise OperationFailed(f"training script {recipe.script} did not write "
                                  "out/model.onnx")
        onnx_bytes = model_path.read_bytes()
        steps = read_metrics(out / "metrics.jsonl", recipe.script)
        artifacts = read_artifacts(out / "artifacts", recipe.script)
        source = f"model.onnx from {recipe.script}"
        check_model(onnx_bytes, source)
        signature = _model_signature(onnx_bytes, table, info, recipe.script)
        probe_inference(onnx_bytes, signature, source)
        metrics: dict[str, Any] = {}
        diff: float | None = None
        if info["task"] is not None:
            for name, rows in splits.items():
                if len(rows):
                    metrics[name] = scoring.score(onnx_bytes, signature, table, rows,
                                                  info["task"], info["target"], recipe.metrics)
            reference = out / "reference.json"
            if reference.is_file():
                diff = _parity(onnx_bytes, signature, table, splits["test"], reference,
                               parity_tolerance, recipe.script)
                progress({"event": "parity", "max_abs_diff": diff})
            else:
                progress({"event": "note", "message": "no reference.json: parity not checked, "
                          "and the parity gate refuses the model"})
    metrics["rows"] = {k: int(len(v)) for k, v in splits.items()}
    last: dict[str, float] = {}
    for _step, name, value in sorted(steps, key=lambda s: s[0]):
        last[name] = value
    if last:
        metrics["script"] = last
    return Outcome(onnx=onnx_bytes, weights_digest=weights_digest(onnx_bytes), metrics=metrics,
                   signature=signature, device=device, parity_max_abs_diff=diff, log=log,
                   steps=steps, artifacts=artifacts)
