"""Training recipes: a YAML file (or the same as a dict) naming data, model and seed.

```yaml
name: churn                  # registry model name the run's version goes to
dataset: churn@1             # NAME@VERSION (NAME alone means the latest; the run records which)
target: churned              # default: the target recorded with the dataset version
features: [age, plan]        # default: every other column except timestamps
model:
  template: mlp_classifier   # logistic_regression, linear_regression, mlp_classifier, mlp_regressor,
                             # gbt_classifier, gbt_regressor (gradient-boosted trees)
  params: {hidden: [32], epochs: 20, batch_size: 64, lr: 0.01, weight_decay: 0.0}
split: {train: 0.7, validation: 0.15, test: 0.15}   # seeded by `seed`
metrics: [accuracy, f1_macro]  # default: every metric of the task
seed: 42
device: auto                 # auto, cpu or cuda
```

Instead of ``model.template`` a recipe may name ``script: train.py`` with
``params``, and optionally ``code: DIR`` (the folder snapshotted with it; the
script's path is then inside it), ``python:`` (an interpreter or virtual
environment on this machine), ``task`` and ``classes``; see
``appliance.training.script`` and docs/training.md for the contract. The
recipe's canonical JSON plus the code's bytes are the run's code hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.audit.log import canonical_json
from appliance.errors import BadInput
from appliance.registry.refs import check_name

TEMPLATES: dict[str, str] = {
    "logistic_regression": "classification",
    "linear_regression": "regression",
    "mlp_classifier": "classification",
    "mlp_regressor": "regression",
    "gbt_classifier": "classification",
    "gbt_regressor": "regression",
}
METRICS = {
    "classification": ("accuracy", "log_loss", "f1_macro", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
COMMON_PARAMS: dict[str, Any] = {"epochs": 20, "batch_size": 64, "lr": 0.01, "weight_decay": 0.0}
MLP_PARAMS: dict[str, Any] = {"hidden": [32]}
# scikit-learn's HistGradientBoosting defaults; max_depth None means no limit.
GBT_PARAMS: dict[str, Any] = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31,
                              "max_depth": None, "min_samples_leaf": 20,
                              "l2_regularization": 0.0, "max_bins": 255}
KEYS = ("name", "dataset", "target", "features", "model", "script", "code", "python", "task",
        "classes", "params", "split", "metrics", "seed", "device")
TASKS = ("classification", "regression")
# A code folder is copied into the database's blob store with every run: keep it to code.
MAX_CODE_BYTES = 20 * 1024 * 1024
MAX_CODE_FILES = 2000
SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache",
                          ".pytest_cache", ".ruff_cache"})
# Recorded fields that are derived from the code, not written by a user.
RECORDED = ("script_sha256", "code_manifest_sha256")


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    target: str | None
    features: list[str] | None
    template: str | None
    script: str | None
    params: dict[str, Any]
    split: dict[str, float]
    metrics: list[str] | None
    seed: int
    device: str
    script_bytes: bytes | None = field(default=None, repr=False)
    declared_task: str | None = None
    classes: list[str] | None = None
    code: str | None = None
    python: str | None = None
    # The snapshot of ``code``: relative path -> bytes (the script's path among them).
    code_files: dict[str, bytes] | None = field(default=None, repr=False)

    @property
    def task(self) -> str | None:
        return TEMPLATES.get(self.template or "") or self.declared_task

    def code_manifest(self) -> dict[str, str]:
        """Relative path -> SHA-256 of every file in the code snapshot."""
        return {path: hashlib.sha256(data).hexdigest()
                for path, data in sorted((self.code_files or {}).items())}

    def record(self) -> dict[str, Any]:
        """The canonical form stored with a run and hashed into its code hash."""
        out: dict[str, Any] = {
            "name": self.name, "dataset": self.dataset, "target": self.target,
            "features": self.features, "params": self.params, "split": self.split,
            "metrics": self.metrics, "seed": self.seed, "device": self.device,
        }
        if self.template:
            out["model"] = {"template": self.template}
        if self.script_bytes is not None:
            out["script"] = self.script
            out["script_sha256"] = hashlib.sha256(self.script_bytes).hexdigest()
        for key in ("code", "python", "classes"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.declared_task is not None:
            out["task"] = self.declared_task
        if self.code is not None:
            out["code_manifest_sha256"] = hashlib.sha256(
                canonical_json(self.code_manifest())).hexdigest()
        return out

    def code_hash(self) -> str:
        hasher = hashlib.sha256(canonical_json(self.record()))
        if self.code is not None:
            for path, data in sorted((self.code_files or {}).items()):
                hasher.update(path.encode() + b"\0" + data)
        elif self.script_bytes is not None:
            hasher.update(self.script_bytes)
        return hasher.hexdigest()

    def with_dataset(self, ref: str) -> Recipe:
        return Recipe(**{**self.__dict__, "dataset": ref})


def _num(value: Any, key: str, *, integer: bool = False, low: float | None = None,
         high: float | None = None, open_low: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise BadInput(f"recipe field '{key}': {value!r} is not {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):  # NaN passes every comparison below and poisons training
        raise BadInput(f"recipe field '{key}': {value!r} is not a finite number")
    if low is not None and (value <= low if open_low else value < low):
        raise BadInput(f"recipe field '{key}': {value!r} must be {'>' if open_low else '>='} {low:g}")
    if high is not None and value > high:
        raise BadInput(f"recipe field '{key}': {value!r} must be <= {high:g}")
    return value


def _gbt_params(params: dict[str, Any]) -> dict[str, Any]:
    _num(params["max_iter"], "model.params.max_iter", integer=True, low=1, high=100_000)
    params["learning_rate"] = float(_num(params["learning_rate"], "model.params.learning_rate",
                                         low=0, open_low=True))
    _num(params["max_leaf_nodes"], "model.params.max_leaf_nodes", integer=True, low=2,
         high=65536)
    if params["max_depth"] is not None:
        _num(params["max_depth"], "model.params.max_depth", integer=True, low=1, high=1000)
    _num(params["min_samples_leaf"], "model.params.min_samples_leaf", integer=True, low=1)
    params["l2_regularization"] = float(_num(params["l2_regularization"],
                                             "model.params.l2_regularization", low=0))
    _num(params["max_bins"], "model.params.max_bins", integer=True, low=2, high=255)
    return params


def _template_params(template: str, given: Mapping[str, Any]) -> dict[str, Any]:
    if template.startswith("gbt_"):
        unknown = sorted(set(given) - set(GBT_PARAMS))
        if unknown:
            raise BadInput(f"recipe field 'model.params': unknown {unknown}; {template} "
                           f"accepts {sorted(GBT_PARAMS)}")
        return _gbt_params({**GBT_PARAMS, **given})
    defaults = dict(COMMON_PARAMS)
    if template.startswith("mlp_"):
        defaults.update(MLP_PARAMS)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise BadInput(f"recipe field 'model.params': unknown {unknown}; {template} accepts "
                       f"{sorted(defaults)}")
    params = {**defaults, **given}
    _num(params["epochs"], "model.params.epochs", integer=True, low=1, high=100_000)
    _num(params["batch_size"], "model.params.batch_size", integer=True, low=1)
    params["lr"] = float(_num(params["lr"], "model.params.lr", low=0, open_low=True))
    params["weight_decay"] = float(_num(params["weight_decay"], "model.params.weight_decay", low=0))
    if "hidden" in params:
        hidden = params["hidden"]
        if not isinstance(hidden, list) or not hidden:
            raise BadInput("recipe field 'model.params.hidden': expected a list of layer sizes")
        for size in hidden:
            _num(size, "model.params.hidden", integer=True, low=1, high=65536)
    return params


def _split(value: Any) -> dict[str, float]:
    split = {"train": 0.7, "validation": 0.15, "test": 0.15}
    if value is None:
        return split
    if not isinstance(value, Mapping) or set(value) - set(split):
        raise BadInput("recipe field 'split': expected {train, validation, test} fractions")
    split.update({k: float(_num(v, f"split.{k}", low=0, high=1)) for k, v in value.items()})
    if abs(sum(split.values()) - 1.0) > 1e-9:
        raise BadInput(f"recipe field 'split': fractions add up to {sum(split.values()):g}, not 1")
    if split["train"] <= 0 or split["test"] <= 0:
        raise BadInput("recipe field 'split': train and test must each be more than 0")
    return split


def snapshot_code(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative POSIX path -> bytes), caches and VCS left out;
    BadInput naming the field when it is missing or too large."""
    if not folder.is_dir():
        raise BadInput(f"recipe field 'code': {folder} is not a folder")
    root = folder.resolve()
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.endswith(".pyc") or not path.is_file():
                continue
            if not path.resolve().is_relative_to(root):
                raise BadInput(f"recipe field 'code': {path} links outside {folder}")
            data = path.read_bytes()
            total += len(data)
            if total > MAX_CODE_BYTES or len(files) >= MAX_CODE_FILES:
                raise BadInput(f"recipe field 'code': {folder} holds more than "
                               f"{MAX_CODE_BYTES // (1024 * 1024)} MiB or {MAX_CODE_FILES} "
                               "files; keep data and outputs out of the code folder")
            files[path.relative_to(root).as_posix()] = data
    return files


def _script_fields(data: Mapping[str, Any], template: str | None) -> dict[str, Any]:
    """Validate task, classes and python (with any recipe) and return them."""
    task = data.get("task")
    if task is not None:
        if task not in TASKS:
            raise BadInput(f"recipe field 'task': {task!r} is not one of {', '.join(TASKS)}")
        if template is not None and TEMPLATES[template] != task:
            raise BadInput(f"recipe field 'task': {template} is a {TEMPLATES[template]} "
                           f"template, not {task}")
    classes = data.get("classes")
    if classes is not None:
        if (task or TEMPLATES.get(template or "")) != "classification":
            raise BadInput("recipe field 'classes' needs 'task: classification'")
        if template is not None:
            raise BadInput("recipe field 'classes': a template learns its classes from the data")
        if (not isinstance(classes, list) or len(classes) < 2
                or not all(isinstance(c, (str, int)) and not isinstance(c, bool)
                           for c in classes)):
            raise BadInput("recipe field 'classes' must be a list of at least 2 class labels")
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise BadInput("recipe field 'classes' names a class twice")
    python = data.get("python")
    if python is not None:
        if template is not None:
            raise BadInput("recipe field 'python' is for scripts; templates run in the "
                           "appliance's own Python")
        if not isinstance(python, str) or not python:
            raise BadInput("recipe field 'python' must be the path of a Python interpreter or "
                           "a virtual environment")
    return {"declared_task": task if template is None else None, "classes": classes,
            "python": python}


def parse_recipe(
    data: Any, *, base_dir: Path | None = None, script_bytes: bytes | None = None,
    code_files: dict[str, bytes] | None = None,
) -> Recipe:
    """Validate a recipe mapping; ``script_bytes`` or ``code_files`` supply recorded code."""
    if not isinstance(data, Mapping):
        raise BadInput("a recipe must be a mapping of fields (name, dataset, model, ...)")
    unknown = sorted(set(data) - set(KEYS) - set(RECORDED))
    if unknown:
        raise BadInput(f"recipe: unknown fields {unknown}; accepted: {', '.join(KEYS)}")
    for key in ("name", "dataset"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise BadInput(f"recipe field '{key}' is required (a string)")
    name = check_name(data["name"], "recipe field 'name'")
    target = data.get("target")
    if target is not None and not isinstance(target, str):
        raise BadInput("recipe field 'target' must be a column name")
    features = data.get("features")
    if features is not None and (
        not isinstance(features, list) or not features
        or not all(isinstance(f, str) for f in features)
    ):
        raise BadInput("recipe field 'features' must be a non-empty list of column names")
    model = data.get("model")
    script = data.get("script")
    template: str | None = None
    if (model is None) == (script is None):
        raise BadInput("recipe: give exactly one of 'model' (with 'template') or 'script'")
    if model is not None and data.get("code") is not None:
        raise BadInput("recipe field 'code' is for scripts, not templates")
    if model is not None:
        if not isinstance(model, Mapping) or set(model) - {"template", "params"}:
            raise BadInput("recipe field 'model': expected {template, params}")
        template = model.get("template")
        if template not in TEMPLATES:
            raise BadInput(f"recipe field 'model.template': {template!r} is not one of "
                           f"{', '.join(TEMPLATES)}")
        given = model.get("params") if model.get("params") is not None else data.get("params", {})
        if not isinstance(given, Mapping):
            raise BadInput("recipe field 'model.params' must be a mapping")
        params = _template_params(template, given)
    else:
        if not isinstance(script, str) or not script:
            raise BadInput("recipe field 'script' must be a file name")
        params = data.get("params") or {}
        if not isinstance(params, Mapping):
            raise BadInput("recipe field 'params' must be a mapping")
        params = dict(params)
        code = data.get("code")
        if code is not None:
            if not isinstance(code, str) or not code:
                raise BadInput("recipe field 'code' must be the name of a folder")
            if code_files is None:
                code_files = snapshot_code(Path(code) if base_dir is None else base_dir / code)
            script_bytes = code_files.get(Path(script).as_posix())
            if script_bytes is None:
                raise BadInput(f"recipe field 'script': {script} is not in the code folder "
                               f"{code} (the script's path is relative to it)")
        elif script_bytes is None:
            path = Path(script) if base_dir is None else base_dir / script
            try:
                script_bytes = path.read_bytes()
            except OSError as exc:
                raise BadInput(f"recipe field 'script': can not read {path}: {exc.strerror}") from exc
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise BadInput("recipe field 'metrics' must be a list of metric names")
        task = TEMPLATES.get(template or "") or data.get("task")
        if task in METRICS:
            bad = [m for m in metrics if m not in METRICS[task]]
            if bad:
                raise BadInput(f"recipe field 'metrics': {bad} are not {task} metrics; "
                               f"accepted: {', '.join(METRICS[task])}")
    seed = _num(data.get("seed", 0), "seed", integer=True, low=0, high=2**32 - 1)
    device = data.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"recipe field 'device': {device!r} is not one of auto, cpu, cuda")
    if device == "cuda" and template is not None and template.startswith("gbt_"):
        raise BadInput(f"recipe field 'device': {template} trains on the CPU; use 'auto' or "
                       "'cpu' (its ONNX model is served on either)")
    extra = _script_fields(data, template)
    return Recipe(
        name=name, dataset=data["dataset"], target=target, features=features,
        template=template, script=script if template is None else None, params=dict(params),
        split=_split(data.get("split")), metrics=metrics, seed=int(seed), device=device,
        script_bytes=script_bytes if template is None else None,
        code=data.get("code") if template is None else None,
        code_files=code_files if template is None and data.get("code") is not None else None,
        **extra,
    )


def recorded_recipe(record: Mapping[str, Any], read: Callable[[str], bytes]) -> Recipe:
    """A run's recorded recipe with its code read back from the blob store (``read``)."""
    manifest_sha = record.get("code_manifest_sha256")
    if manifest_sha:
        manifest = json.loads(read(str(manifest_sha)))
        files = {path: read(digest) for path, digest in manifest.items()}
        return parse_recipe(record, code_files=files)
    script_sha = record.get("script_sha256")
    return parse_recipe(record, script_bytes=read(str(script_sha)) if script_sha else None)


def store_code(recipe: Recipe, put: Callable[[bytes], str]) -> None:
    """Put the recipe's code (each file, and the manifest of a folder) into the blob store."""
    if recipe.code_files is not None:
        for data in recipe.code_files.values():
            put(data)
        put(canonical_json(recipe.code_manifest()))
    elif recipe.script_bytes is not None:
        put(recipe.script_bytes)


MAX_SWEEP_POINTS = 256


def sweep_points(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid of ``sweep: {param: [values], ...}``: one params mapping per point, the
    last parameter varying fastest."""
    grid = data.get("sweep")
    if not isinstance(grid, Mapping) or not grid:
        raise BadInput("recipe field 'sweep' must map parameter names to lists of values")
    axes: list[tuple[str, list[Any]]] = []
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise BadInput(f"recipe field 'sweep.{name}' must be a non-empty list of values")
        axes.append((str(name), values))
    points: list[dict[str, Any]] = [{}]
    for name, values in axes:
        points = [{**point, name: value} for point in points for value in values]
        if len(points) > MAX_SWEEP_POINTS:
            raise BadInput(f"recipe field 'sweep': more than {MAX_SWEEP_POINTS} points")
    return points


def with_point(data: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of one sweep point: its values over the recipe's params, no 'sweep'."""
    out = {k: v for k, v in data.items() if k != "sweep"}
    model = out.get("model")
    if isinstance(model, Mapping):
        out["model"] = {**model, "params": {**(model.get("params") or {}), **point}}
    else:
        out["params"] = {**(out.get("params") or {}), **point}
    return out


def read_recipe_file(path: Path) -> Any:
    """A recipe file's parsed YAML; BadInput naming the file and the place."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such recipe file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: can not be read: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"{path} is not valid YAML{at}") from exc


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any], *,
                point: Mapping[str, Any] | None = None) -> Recipe:
    """A recipe from a YAML file's path or an already parsed mapping; ``point`` picks
    one point of a sweep recipe."""
    base_dir = None
    if isinstance(source, Mapping):
        data: Any = source
    else:
        data = read_recipe_file(Path(source))
        base_dir = Path(source).parent
    if isinstance(data, Mapping) and "sweep" in data:
        if point is None:
            raise BadInput("recipe field 'sweep': a sweep recipe queues one train job per "
                           "point; run it with 'appliance train RECIPE' and a worker")
        sweep_points(data)
        data = with_point(data, point)
    elif point is not None:
        raise BadInput("a sweep point was given for a recipe without 'sweep'")
    return parse_recipe(data, base_dir=base_dir)
