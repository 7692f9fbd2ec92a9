"""User training scripts: the contract and how one is run.

A recipe with ``script: train.py`` runs, in a fresh working directory::

    python train.py --data data.csv --params params.json --output out/

``data.csv`` is the dataset version's exact bytes; ``params.json`` holds
``{"params", "seed", "target", "features", "device", "dataset"}`` from the
recipe. The script must write ``out/model.onnx`` and ``out/metrics.json`` (a
JSON object, ideally ``{"test": {...}, ...}``) and exit 0. Its standard output
and error become the run's log. The model must pass onnx.checker and one
inference on zeros. ``PYTHONHASHSEED`` is set to the recipe's seed; anything
else the script does to be deterministic is up to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from appliance.errors import BadInput, OperationFailed
from appliance.onnxtools.models import check_model, probe_inference, signature_of
from appliance.training.export import weights_digest
from appliance.training.recipe import Recipe
from appliance.training.trainer import Outcome, Progress


def run_script(data: bytes, recipe: Recipe, target: str | None, dataset_ref: str,
               progress: Progress) -> Outcome:
    if recipe.script_bytes is None:
        raise BadInput("recipe names no script")
    with tempfile.TemporaryDirectory(prefix="appliance-run-") as tmp:
        work = Path(tmp)
        (work / "data.csv").write_bytes(data)
        (work / "train.py").write_bytes(recipe.script_bytes)
        (work / "params.json").write_text(json.dumps({
            "params": recipe.params, "seed": recipe.seed, "target": target,
            "features": recipe.features, "device": recipe.device, "dataset": dataset_ref,
        }, sort_keys=True))
        out = work / "out"
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": str(recipe.seed)}
        progress({"event": "script", "script": recipe.script})
        done = subprocess.run(
            [sys.executable, "train.py", "--data", "data.csv", "--params", "params.json",
             "--output", "out"],
            cwd=work, env=env, capture_output=True, text=True, check=False,
        )
        log = (done.stdout + done.stderr).splitlines()
        if done.returncode != 0:
            last = log[-1] if log else "no output"
            raise OperationFailed(f"training script {recipe.script} exited with status "
                                  f"{done.returncode}: {last}")
        model_path, metrics_path = out / "model.onnx", out / "metrics.json"
        for path in (model_path, metrics_path):
            if not path.is_file():
                raise OperationFailed(f"training script {recipe.script} did not write "
                                      f"{path.relative_to(work)}")
        onnx_bytes = model_path.read_bytes()
        try:
            metrics = json.loads(metrics_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OperationFailed(f"{recipe.script} wrote metrics.json that is not JSON") from exc
    if not isinstance(metrics, dict):
        raise OperationFailed(f"{recipe.script} wrote metrics.json that is not a JSON object")
    check_model(onnx_bytes, f"model.onnx from {recipe.script}")
    signature = signature_of(onnx_bytes)
    probe_inference(onnx_bytes, signature, f"model.onnx from {recipe.script}")
    signature["target"] = target
    return Outcome(onnx=onnx_bytes, weights_digest=weights_digest(onnx_bytes), metrics=metrics,
                   signature=signature, device=recipe.device, log=log)
