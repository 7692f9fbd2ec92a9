"""Training: recipes, deterministic built-in templates (torch networks, gradient-boosted
trees), ONNX export with a parity check, run records and reproduction."""

from appliance.training.recipe import Recipe, load_recipe, parse_recipe
from appliance.training.runs import (
    Run,
    RunStatus,
    get_run,
    list_runs,
    run_artifacts,
    run_steps,
)
from appliance.training.service import (
    ReproduceResult,
    RunResult,
    read_artifact,
    reproduce_run,
    run_log,
    run_training,
)

__all__ = [
    "Recipe",
    "ReproduceResult",
    "Run",
    "RunResult",
    "RunStatus",
    "get_run",
    "list_runs",
    "load_recipe",
    "parse_recipe",
    "read_artifact",
    "reproduce_run",
    "run_artifacts",
    "run_log",
    "run_steps",
    "run_training",
]
