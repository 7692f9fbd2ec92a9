"""``appliance train`` and ``appliance runs list|show|reproduce``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.training.runs import get_run, run_artifacts, run_steps
from appliance.training.search import DEFAULT_COLUMNS, compare_runs, search_runs

# The training service (recipes, datasets, the environment) is imported by the commands
# that train, reproduce or read a run's files, not by 'runs list' and 'runs show'.


def _printer(verbose: bool, run_id_to_stderr: bool = False) -> Any:
    def show(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "started":
            click.echo(f"run {event['run_id']}", err=run_id_to_stderr)
        elif not verbose:
            return
        elif kind == "epoch":
            val = f" val_loss {event['val_loss']:.6f}" if "val_loss" in event else ""
            click.echo(f"epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.6f}{val}")
        elif kind == "export":
            click.echo("exporting ONNX")
        elif kind == "parity":
            against = event.get("reference", "torch")
            click.echo(f"parity: max |onnxruntime - {against}| = {event['max_abs_diff']:.3g}")
        elif kind == "script":
            click.echo(f"running {event['script']} with {event['python']}")
        elif kind == "output":
            click.echo(f"| {event['line']}")
        elif kind == "note":
            click.echo(str(event["message"]))

    return show


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--wait", is_flag=True,
              help="Show progress (epochs, loss) and end with the new model version.")
@click.option("--json", "as_json", is_flag=True, help="Print the finished run as JSON.")
@pass_env
def train(env: Env, recipe: str, wait: bool, as_json: bool) -> None:
    """Train RECIPE.yaml and register the model version it produces; prints the run id.

    Training runs in this process, with or without --wait; --wait adds the
    progress lines and the final model version. A recipe with 'sweep:' queues
    one train job per point of its grid instead, and prints the sweep's id.
    """
    from appliance.training.recipe import read_recipe_file
    from appliance.training.service import run_training

    data = read_recipe_file(Path(recipe))
    if isinstance(data, dict) and "sweep" in data:
        # Only a sweep needs the queue and the job kinds: keep them out of every other start.
        from appliance.jobs import KINDS
        from appliance.jobs.training import submit_sweep

        if wait:
            raise click.UsageError("a sweep runs as queued jobs; follow them with "
                                   "'appliance jobs list' and 'appliance runs list --sweep ID'")
        sweep = submit_sweep(env.home, recipe, actor=env.actor, config=env.config, kinds=KINDS)
        if as_json:
            echo_json(sweep.as_dict())
            return
        click.echo(f"sweep {sweep.id}: {len(sweep.points)} points queued as jobs "
                   + ", ".join(str(j) for j in sweep.jobs))
        return
    result = run_training(env.home, recipe, env.actor, config=env.config,
                          progress=_printer(wait and not as_json, run_id_to_stderr=as_json))
    if as_json:
        echo_json(result.as_dict())
        return
    if wait:
        test = result.metrics.get("test", {})
        summary = " ".join(f"{k} {v:.4g}" for k, v in test.items()
                           if isinstance(v, (int, float)))
        click.echo(f"registered {result.model_version}" + (f" (test: {summary})" if summary else ""))


@click.group("runs")
def runs_group() -> None:
    """Inspect and reproduce training runs."""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef"
                                                            for c in value):
        return value[:12]  # a hash: its start is enough to tell two apart
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    for line in [header] + rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@runs_group.command("list")
@click.option("--where", default=None,
              help="Only runs matching, e.g. 'test.accuracy > 0.95 and params.lr = 0.002'.")
@click.option("--sort", default=None,
              help="Fields to sort by, '-' for descending, e.g. '-test.accuracy,id'.")
@click.option("--columns", default=None,
              help="Comma-separated fields to show (default: id,status,version,started).")
@click.option("--sweep", type=int, default=None, help="Only the runs of this sweep.")
@click.option("--limit", default=50, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@pass_env
def runs_list(env: Env, where: str | None, sort: str | None, columns: str | None,
              sweep: int | None, limit: int, as_json: bool) -> None:
    """List training runs, newest first; filter, sort and pick columns by parameter,
    metric or hash (see docs/training.md for the fields)."""
    with env.home.db() as db:
        rows = search_runs(db, where=where, sort=sort, sweep=sweep, limit=limit)
    if as_json:
        echo_json(rows)
        return
    fields = [c.strip() for c in columns.split(",") if c.strip()] if columns else list(
        DEFAULT_COLUMNS)
    _table([f.upper() if f in DEFAULT_COLUMNS else f for f in fields],
           [[_cell(r.get(f)) if f != "started" else (r["started"] or "")[:19] for f in fields]
            for r in rows])


@runs_group.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@pass_env
def runs_compare(env: Env, runs: tuple[str, ...], as_json: bool) -> None:
    """Show RUN RUN [...] side by side: parameters, metrics and data, code and environment
    hashes; '*' marks the fields that differ."""
    ids = []
    for ref in runs:
        try:
            ids.append(int(ref.removeprefix("run-")))
        except ValueError as exc:
            raise click.BadParameter(f"{ref!r} is not a run number", param_hint="RUNS") from exc
    with env.home.db() as db:
        rows = compare_runs(db, ids)
    if as_json:
        echo_json(rows)
        return
    _table(["", "FIELD"] + [f"RUN {i}" for i in ids],
           [["*" if r["differs"] else "", r["field"]] + [_cell(v) for v in r["values"]]
            for r in rows])


@runs_group.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@pass_env
def runs_show(env: Env, run: str, as_json: bool) -> None:
    """Show a run: recipe, data and code hashes, environment, metrics, step metrics,
    artifacts and its model version."""
    with env.home.db() as db:
        record = get_run(db, run)
        curves = run_steps(db, record.id)
        artifacts = run_artifacts(db, record.id)
    if as_json:
        echo_json({**record.as_dict(), "steps": {k: [list(p) for p in v]
                                                 for k, v in curves.items()},
                   "artifacts": artifacts})
        return
    click.echo(f"run {record.id}: {record.status}  by {record.actor}")
    click.echo(f"started {record.started_at}  ended {record.ended_at or '-'}")
    click.echo(f"dataset {record.dataset}  sha256:{record.dataset_digest}")
    click.echo(f"code    sha256:{record.code_hash}")
    click.echo(f"env     sha256:{record.env_hash}  python {record.environment.get('python')}")
    click.echo(f"seed {record.seed}  device {record.device}")
    if record.model_version:
        click.echo(f"model version {record.model_version}  weights sha256:{record.weights_digest}")
    if record.error:
        click.echo(f"error: {record.error}")
    script_python = record.environment.get("script_python")
    if script_python:
        click.echo(f"script python {script_python.get('executable')} "
                   f"({script_python.get('python')}, "
                   f"{len(script_python.get('packages', {}))} packages)")
    for split, values in record.metrics.items():
        if isinstance(values, dict):
            click.echo(f"{split}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
        elif isinstance(values, (int, float)):
            click.echo(f"{split}: {values:.4g}")
    for name, points in curves.items():
        click.echo(f"curve {name}: {len(points)} steps, last {points[-1][1]:.4g} "
                   f"at step {points[-1][0]}")
    for item in artifacts:
        click.echo(f"artifact {item['path']}  {item['size_bytes']} bytes  "
                   f"sha256:{item['digest']}")


@runs_group.command("logs")
@click.argument("run")
@pass_env
def runs_logs(env: Env, run: str) -> None:
    """Print a finished run's log: the appliance's events and the script's own output."""
    from appliance.training.service import run_log

    text = run_log(env.home, run)
    click.echo(text, nl=not text.endswith("\n"))


@runs_group.command("artifact")
@click.argument("run")
@click.argument("path")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write to this file instead of standard output.")
@pass_env
def runs_artifact(env: Env, run: str, path: str, output: str | None) -> None:
    """Write one of RUN's artifacts (a file its script left under artifacts/)."""
    from appliance.training.service import read_artifact

    data = read_artifact(env.home, run, path)
    if output is None:
        click.echo(data, nl=False)
    else:
        with open(output, "wb") as f:
            f.write(data)


@runs_group.command("reproduce")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_env
def runs_reproduce(env: Env, run: str, as_json: bool) -> None:
    """Re-run RUN's recipe on its data and say: identical, within tolerance or not reproducible.

    Exits 1 when not reproducible, naming what differs (data, code, environment, weights).
    """
    from appliance.training.service import reproduce_run

    result = reproduce_run(env.home, run, env.actor, config=env.config)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(result.verdict)
        for line in result.differences:
            click.echo(f"  {line}")
        if result.verdict == "within tolerance":
            click.echo(f"  metrics differ by at most {result.max_metric_diff:.3g} "
                       f"(bound {result.tolerance:g})")
    if not result.reproducible:
        raise SystemExit(1)


COMMANDS = [train, runs_group]
