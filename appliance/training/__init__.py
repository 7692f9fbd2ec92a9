"""Training: recipes, deterministic built-in templates (torch networks, gradient-boosted
trees), ONNX export with a parity check, run records and reproduction.

Each name is imported from its module when first used, so that reading run records
(``runs list``, ``runs show``, the model card) does not load recipes, datasets and the
training service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import lazy_exports

if TYPE_CHECKING:
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

#: name -> the module of this package that defines it, imported on first use
_LAZY = {
    "Recipe": "recipe", "load_recipe": "recipe", "parse_recipe": "recipe",
    "Run": "runs", "RunStatus": "runs", "get_run": "runs", "list_runs": "runs",
    "run_artifacts": "runs", "run_steps": "runs",
    "ReproduceResult": "service", "RunResult": "service", "read_artifact": "service",
    "reproduce_run": "service", "run_log": "service", "run_training": "service",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


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
