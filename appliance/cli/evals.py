"""``appliance evals``: evaluation sets, runs against a language model, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli._jobs import submit_and_follow
from appliance.errors import BadInput


@click.group("evals")
def evals_group() -> None:
    """Evaluation sets of language models: register, run, report and compare."""


@evals_group.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@pass_env
def add_cmd(env: Env, name: str, file: str, as_json: bool) -> None:
    """Register FILE (JSONL, one case a line) as the next version of evaluation set NAME.

    Every line is checked first (its messages or variables, its scorers and their
    arguments); a bad line exits 2 naming the line and the field, and nothing is
    registered. The same bytes give back the existing version.
    """
    from appliance.evals.sets import add_evalset

    with env.home.db() as db:
        version, created = add_evalset(db, env.home.blobs, name, file, actor=env.actor,
                                       max_file_mb=env.config["evals.max_file_mb"])
    if as_json:
        echo_json({**version.as_dict(), "created": created})
        return
    click.echo(version.ref)
    if not created:
        click.echo(f"(already registered as {version.ref})", err=True)


@evals_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation sets as JSON.")
@pass_env
def list_cmd(env: Env, as_json: bool) -> None:
    """List evaluation sets with their latest version and number of cases."""
    from appliance.evals.sets import list_evalsets

    with env.home.db() as db:
        rows = list_evalsets(db)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no evaluation sets; register one with 'appliance evals add NAME FILE.jsonl'")
        return
    click.echo(f"{'NAME':<24} {'LATEST':>6} {'VERSIONS':>8} {'CASES':>7}  CREATED")
    for r in rows:
        click.echo(f"{r['name']:<24} {r['latest'] or '-':>6} {r['versions']:>8} "
                   f"{r['latest_cases'] or 0:>7}  {r['created_at'][:19]}")


@evals_group.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("--json", "as_json", is_flag=True, help="Print the version and its cases as JSON.")
@pass_env
def show_cmd(env: Env, ref: str, as_json: bool) -> None:
    """Show an evaluation set's version (NAME alone: the latest): hash, scorers, cases."""
    from appliance.evals.sets import get_evalset_version, load_cases

    with env.home.db() as db:
        version = get_evalset_version(db, ref)
    cases = load_cases(env.home.blobs, version)
    if as_json:
        echo_json({**version.as_dict(), "case_list": [c.as_dict() for c in cases]})
        return
    click.echo(f"{version.ref}  sha256:{version.digest}")
    click.echo(f"  {version.cases} cases, {version.size_bytes} bytes, by {version.created_by} "
               f"at {version.created_at[:19]}")
    click.echo("  scorers: " + ", ".join(f"{k} ({v})" for k, v in version.scorers.items()))
    for c in cases:
        asks = "messages" if c.messages is not None else "variables"
        click.echo(f"  line {c.line:<4} {c.id:<24} {asks:<9} "
                   + ", ".join(e["scorer"] for e in c.expect))


def _params(max_tokens: int | None, temperature: float | None, seed: int | None
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (("max_tokens", max_tokens), ("temperature", temperature),
                       ("seed", seed)):
        if value is not None:
            out[key] = value
    return out


@evals_group.command("run")
@click.argument("target")
@click.argument("evalset", metavar="EVALSET[@VERSION]")
@click.option("--judge", default=None, metavar="NAME@VERSION",
              help="The language model that grades judge cases naming no model of their own.")
@click.option("--max-tokens", type=int, default=None,
              help="Longest answer of every case (a case's own params win; default: "
                   "llm.default_max_tokens).")
@click.option("--temperature", type=float, default=None,
              help="Sampling temperature of every case (default 0: greedy).")
@click.option("--seed", type=int, default=None, help="Random seed when sampling.")
@click.option("--wait", is_flag=True,
              help="Wait for the job, show its progress, then print the summary; exit 1 "
                   "unless it succeeded.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the job (or, with --wait, the run's summary) as JSON.")
@pass_env
def run_cmd(env: Env, target: str, evalset: str, judge: str | None, max_tokens: int | None,
            temperature: float | None, seed: int | None, wait: bool, as_json: bool) -> None:
    """Queue an eval-run job: ask TARGET (a language model, NAME@VERSION or NAME@ALIAS, or
    a prompt, prompts:/NAME@ALIAS) every case of EVALSET, score the answers and store the
    run.

    The target, the set, the judges and the parameters are checked before the job is
    queued; a prompt target's version is pinned then.
    """
    from appliance.evals.report import summary_text
    from appliance.evals.results import get_run
    from appliance.evals.run import plan_run

    params = _params(max_tokens, temperature, seed)
    with env.home.db() as db:
        plan = plan_run(db, env.home.blobs, target, evalset, judge=judge, params=params)
    job_params: dict[str, Any] = {"target": target, "evalset": plan.evalset.ref}
    if judge is not None:
        job_params["judge"] = judge
    if params:
        job_params["params"] = params
    what = f"{plan.evalset.ref} on {target}"
    result = submit_and_follow(env, "eval-run", job_params, f"evaluation of {what}",
                               wait=wait, as_json=as_json)
    if result is None:
        return
    with env.home.db() as db:
        run = get_run(db, int(result["run_id"]), cases=False)
    if as_json:
        echo_json(run)
    else:
        click.echo(summary_text(run))


@evals_group.command("runs")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@pass_env
def runs_cmd(env: Env, name: str | None, as_json: bool) -> None:
    """List evaluation runs, newest first (of evaluation set NAME, or of every set)."""
    from appliance.evals.results import list_runs

    with env.home.db() as db:
        runs = list_runs(db, name)
    if as_json:
        echo_json(runs)
        return
    if not runs:
        click.echo("no evaluation runs; start one with 'appliance evals run TARGET EVALSET'")
        return
    for r in runs:
        s = r["summary"]
        means = ", ".join(f"{k} {v['mean']:.2f}" for k, v in s["scorers"].items())
        click.echo(f"{r['id']:>4}  {r['evalset']:<16} {r['target']:<20} {r['model']:<16} "
                   f"{s['passed']}/{s['cases']} passed  {means}  {r['created_at'][:19]}")


@evals_group.command("report")
@click.argument("run_id", metavar="RUN", type=int)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the HTML report to this file (default: print it).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run with every case as JSON instead of HTML.")
@pass_env
def report_cmd(env: Env, run_id: int, out: str | None, as_json: bool) -> None:
    """The report of evaluation run RUN: one HTML page with no external asset (its
    summary per scorer and every case with its answer, scores and reasons)."""
    from appliance.evals.report import render_html
    from appliance.evals.results import get_run

    with env.home.db() as db:
        run = get_run(db, run_id)
    if as_json:
        echo_json(run)
        return
    page = render_html(run)
    if out is None:
        click.echo(page, nl=False)
        return
    try:
        Path(out).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{out}: can not be written: {exc.strerror or exc}") from None
    click.echo(out)


@evals_group.command("compare")
@click.argument("run_a", metavar="RUN_A", type=int)
@click.argument("run_b", metavar="RUN_B", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@pass_env
def compare_cmd(env: Env, run_a: int, run_b: int, as_json: bool) -> None:
    """Two evaluation runs side by side: per scorer both means, and the cases (matched by
    id) that got better or worse from RUN_A to RUN_B."""
    from appliance.evals.report import compare_text
    from appliance.evals.results import compare

    with env.home.db() as db:
        cmp = compare(db, run_a, run_b)
    if as_json:
        echo_json(cmp)
    else:
        click.echo(compare_text(cmp))


COMMANDS = [evals_group]
