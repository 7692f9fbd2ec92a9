"""``appliance capacity``: profile a model version, and report demand against capacity."""

from __future__ import annotations

from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.cli._jobs import submit_and_follow
from appliance.errors import BadInput


@click.group("capacity")
def capacity_group() -> None:
    """Measure what a model version serves, and size serving to the traffic it gets."""


def _sizes_option(name: str, help_text: str) -> Any:
    return click.option(name, default=None, metavar="N,N,...", help=help_text)


@capacity_group.command("profile")
@click.argument("ref", metavar="MODEL_REF")
@_sizes_option("--batch-sizes", "Rows per request (tabular), e.g. 1,4,16,64.")
@_sizes_option("--concurrency", "Requests kept in flight (tabular), e.g. 1,2,4,8.")
@_sizes_option("--streams", "Concurrent streams (language model), e.g. 1,2,4,8.")
@_sizes_option("--prompt-tokens", "Prompt lengths in tokens (language model), e.g. 16,128.")
@_sizes_option("--answer-tokens", "Answer lengths in tokens (language model), e.g. 32.")
@click.option("--window", "window_s", type=float, default=None, metavar="SECONDS",
              help="One measurement window (default: capacity.window_s).")
@click.option("--wait", is_flag=True,
              help="Wait for the job, show its progress, then print the profile; exit 1 "
                   "unless it succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print the job (or, with --wait, the "
              "profile) as JSON.")
@pass_env
def profile_cmd(env: Env, ref: str, batch_sizes: str | None, concurrency: str | None,
                streams: str | None, prompt_tokens: str | None, answer_tokens: str | None,
                window_s: float | None, wait: bool, as_json: bool) -> None:
    """Queue a capacity-profile job for MODEL_REF (NAME@VERSION or NAME@ALIAS).

    The worker loads the version as serving would and sweeps it, each point measured
    until stable; the profile is stored with the version. On a server with GPUs the job
    asks for a whole GPU, so nothing else shares it while it is measured.
    """
    from appliance.capacity import store
    from appliance.capacity.profile import Sweep
    from appliance.capacity.render import profile_text
    from appliance.registry import resolve

    params: dict[str, Any] = {"model": ref}
    for key, value in (("batch_sizes", batch_sizes), ("concurrency", concurrency),
                       ("streams", streams), ("prompt_tokens", prompt_tokens),
                       ("answer_tokens", answer_tokens), ("window_s", window_s)):
        if value is None:
            continue
        params[key] = value
        try:
            Sweep.from_params({key: value}, env.config)
        except BadInput as exc:  # name the option, not the job's parameter
            option = "--" + ("window" if key == "window_s" else key.replace("_", "-"))
            raise BadInput(f"{option}: {exc.message.partition(': ')[2] or exc.message}"
                           ) from None
    with env.home.db() as db:
        params["model"] = resolve(db, ref).ref  # a version that exists, by number
    result = submit_and_follow(env, "capacity-profile", params,
                               f"capacity profile of {ref}", wait=wait, as_json=as_json)
    if result is None:
        return
    with env.home.db() as db:
        profile = store.get(db, int(result["profile_id"]))
    if as_json:
        echo_json(profile)
    else:
        click.echo(profile_text(profile))


@capacity_group.command("show")
@click.argument("ref", metavar="MODEL_REF|PROFILE_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@pass_env
def show_cmd(env: Env, ref: str, as_json: bool) -> None:
    """Print a capacity profile: the newest of a version (NAME@VERSION), or one by id."""
    from appliance.capacity import store
    from appliance.capacity.render import profile_text

    with env.home.db() as db:
        if ref.isdigit():
            profile = store.get(db, int(ref))
        else:
            found = store.latest(db, ref)
            if found is None:
                raise BadInput(f"{ref} has no capacity profile; make one with 'appliance "
                               f"capacity profile {ref} --wait'")
            profile = found
    if as_json:
        echo_json(profile)
    else:
        click.echo(profile_text(profile))


@capacity_group.command("list")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@pass_env
def list_cmd(env: Env, model: str | None, as_json: bool) -> None:
    """List capacity profiles, newest first (of MODEL, or of every model)."""
    from appliance.capacity import store

    with env.home.db() as db:
        rows = store.listing(db, model)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no capacity profiles yet; make one with 'appliance capacity profile "
                   "NAME@VERSION --wait'")
        return
    for r in rows:
        click.echo(f"{r['id']:>4}  {r['model']}@{r['version']}  {r['kind']:<7}  {r['device']:<4}  "
                   f"{r['points']:>3} points  {r['created_at'][:19]}Z  {r['created_by']}")


@capacity_group.command("report")
@click.option("--since", default="24h", show_default=True,
              help="Requests since this time: a duration back from now (90m, 24h, 7d) or an "
                   "ISO 8601 time.")
@click.option("--slo-p95-ms", type=float, default=None, metavar="MS",
              help="The latency objective: p95 of a request (time to first token for a "
                   "language model); default capacity.slo_p95_ms.")
@click.option("--model", default=None, help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_env
def report_cmd(env: Env, since: str, slo_p95_ms: float | None, model: str | None,
               as_json: bool) -> None:
    """Demand from the request log against capacity: rates, utilisation, the fitted service
    time, recommended serving settings checked by a replay, and memory to reserve."""
    from appliance.capacity.render import report_text
    from appliance.capacity.report import build
    from appliance.monitoring.llm_usage import since_ts

    if slo_p95_ms is not None and not slo_p95_ms > 0:
        raise BadInput(f"--slo-p95-ms must be more than 0, not {slo_p95_ms:g}")
    start = since_ts(since)
    with env.home.db() as db, env.home.monitoring_db() as mon:
        report = build(mon, db, env.config, since=start, slo_p95_ms=slo_p95_ms, model=model)
    if as_json:
        echo_json(report)
    else:
        click.echo(report_text(report))


COMMANDS = [capacity_group]
