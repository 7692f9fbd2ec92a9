"""Training recipes: a YAML file (or the same as a dict) naming data, model and seed.

```yaml
name: churn                  # registry model name the run's version goes to
dataset: churn@1             # NAME@VERSION (NAME alone means the latest; the run records which)
target: churned              # default: the target recorded with the dataset version
features: [age, plan]        # default: every other column except timestamps
model:
  template: mlp_classifier   # logistic_regression, linear_regression, mlp_classifier, mlp_regressor
  params: {hidden: [32], epochs: 20, batch_size: 64, lr: 0.01, weight_decay: 0.0}
split: {train: 0.7, validation: 0.15, test: 0.15}   # seeded by `seed`
metrics: [accuracy, f1_macro]  # default: every metric of the task
seed: 42
device: auto                 # auto, cpu or cuda
```

Instead of ``model.template`` a recipe may name ``script: train.py`` (relative
to the recipe file) with ``params``; see ``appliance.training.script`` for
its contract. The recipe's canonical JSON plus the script's bytes are the
run's code hash.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping
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
}
METRICS = {
    "classification": ("accuracy", "log_loss", "f1_macro", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
COMMON_PARAMS: dict[str, Any] = {"epochs": 20, "batch_size": 64, "lr": 0.01, "weight_decay": 0.0}
MLP_PARAMS: dict[str, Any] = {"hidden": [32]}
KEYS = ("name", "dataset", "target", "features", "model", "script", "params", "split",
        "metrics", "seed", "device")


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

    @property
    def task(self) -> str | None:
        return TEMPLATES.get(self.template or "")

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
        return out

    def code_hash(self) -> str:
        hasher = hashlib.sha256(canonical_json(self.record()))
        if self.script_bytes is not None:
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


def _template_params(template: str, given: Mapping[str, Any]) -> dict[str, Any]:
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


def parse_recipe(
    data: Any, *, base_dir: Path | None = None, script_bytes: bytes | None = None
) -> Recipe:
    """Validate a recipe mapping; ``script_bytes`` supplies a recorded script's bytes."""
    if not isinstance(data, Mapping):
        raise BadInput("a recipe must be a mapping of fields (name, dataset, model, ...)")
    unknown = sorted(set(data) - set(KEYS) - {"script_sha256"})
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
        if script_bytes is None:
            path = Path(script) if base_dir is None else base_dir / script
            try:
                script_bytes = path.read_bytes()
            except OSError as exc:
                raise BadInput(f"recipe field 'script': can not read {path}: {exc.strerror}") from exc
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise BadInput("recipe field 'metrics' must be a list of metric names")
        task = TEMPLATES.get(template or "")
        if task:
            bad = [m for m in metrics if m not in METRICS[task]]
            if bad:
                raise BadInput(f"recipe field 'metrics': {bad} are not {task} metrics; "
                               f"accepted: {', '.join(METRICS[task])}")
    seed = _num(data.get("seed", 0), "seed", integer=True, low=0, high=2**32 - 1)
    device = data.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"recipe field 'device': {device!r} is not one of auto, cpu, cuda")
    return Recipe(
        name=name, dataset=data["dataset"], target=target, features=features,
        template=template, script=script if template is None else None, params=dict(params),
        split=_split(data.get("split")), metrics=metrics, seed=int(seed), device=device,
        script_bytes=script_bytes if template is None else None,
    )


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any]) -> Recipe:
    """A recipe from a YAML file's path or an already parsed mapping."""
    if isinstance(source, Mapping):
        return parse_recipe(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BadInput(f"{path}: no such recipe file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: can not be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise BadInput(f"{path} is not valid YAML{at}") from exc
    return parse_recipe(data, base_dir=path.parent)
