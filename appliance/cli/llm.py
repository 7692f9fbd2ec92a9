"""Language models: ``llm usage``."""

from __future__ import annotations

from typing import Any

import click

from appliance.cli._common import Env, echo_json, pass_env
from appliance.monitoring import llm_usage

DEVICE_SECONDS = {"cuda": "GPU-s", "cpu": "CPU-s"}


@click.group("llm")
def llm_group() -> None:
    """Language models served over OpenAI's API: an example model, usage and cost."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def money(value: float | None) -> str:
    """Two decimals from a cent up; smaller amounts to four significant digits."""
    if value is None:
        return "-"
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.4g}"


def _cells(label: str, g: dict[str, Any]) -> list[str]:
    cost = money(g["cost"]) if g["cost"] is not None else "; ".join(
        f"{money(v)} {c}".strip() for c, v in g["costs"].items())
    return [label, f"{g['requests']:,}", f"{g['errors']:,}", f"{g['prompt_tokens']:,}",
            f"{g['completion_tokens']:,}", _ms(g["ttft_p50_ms"]), _ms(g["ttft_p95_ms"]),
            _ms(g["e2e_p50_ms"]), _ms(g["e2e_p95_ms"]), f"{g['device_s']:,.1f}", cost]


def version_table(total: dict[str, Any], days: list[dict[str, Any]]) -> list[str]:
    """One model version: a heading, its totals, then one row per day."""
    currency = total["currency"] if total["cost"] is not None else ""
    headers = ["day", "requests", "errors", "prompt tok", "completion tok", "ttft p50 ms",
               "ttft p95 ms", "e2e p50 ms", "e2e p95 ms",
               DEVICE_SECONDS.get(total["device"], "device-s"),
               f"cost {currency}".strip()]
    rows = [headers, _cells("total", total), *(_cells(d["day"], d) for d in days)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = [f"{total['model']}@{total['version']} on {total['device']}"]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0])]
                               + [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]))
    return lines


def render(report: dict[str, Any]) -> str:
    head = ([f"since {report['since']}"] if report["since"] else []) + (
        [report["note"]] if report["note"] else [])
    blocks = [head] if head else []
    for total in report["versions"]:
        days = [d for d in report["days"]
                if (d["model"], d["version"]) == (total["model"], total["version"])]
        blocks.append(version_table(total, days))
    return "\n\n".join("\n".join(block) for block in blocks)


@llm_group.command("usage")
@click.option("--model", default=None, help="Only this model's requests.")
@click.option("--since", default=None,
              help="Only requests since this time: a duration back from now (24h, 7d) or an "
                   "ISO 8601 time (2026-01-31, 2026-01-31T09:30:00Z).")
@click.option("--json", "as_json", is_flag=True, help="Print the totals and days as JSON.")
@pass_env
def llm_usage_command(env: Env, model: str | None, since: str | None, as_json: bool) -> None:
    """Requests, tokens, time to first token and end-to-end latency (p50, p95), device
    seconds and cost of the language models, per model version and per UTC day.

    Latencies are those of the answered requests; errors are requests answered with a
    status of 400 or more. Costs are priced by llm.cost_per_gpu_hour when each request ran.
    """
    with env.home.monitoring_db() as mon, env.home.db() as db:
        report = llm_usage(mon, model=model, since=since, db=db)
    if as_json:
        echo_json(report)
    else:
        click.echo(render(report))


COMMANDS = [llm_group]


@llm_group.command("build-example")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny", show_default=True,
              help="tiny: ~110k parameters, built in under a minute; small: a few million, "
                   "a millisecond or more per token, for measuring.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the training.")
def llm_build_example(folder: str, size: str, seed: int) -> None:
    """Build a small language model here, into FOLDER (new or empty), with nothing
    downloaded: a byte-level BPE tokenizer and a Llama-architecture model trained on a
    few made-up facts, converted by onnxruntime-genai's model builder. It answers
    "What is the capital of Veltria?" with "Orsk." Register it with 'appliance models
    import NAME FOLDER'.
    """
    from appliance.errors import BadInput, OperationFailed
    from appliance.llm import tiny

    try:
        out = tiny.build(folder, size=size, seed=seed,
                         progress=lambda m: click.echo(f"llm: {m}", err=True))
    except FileExistsError as exc:
        raise BadInput(f"FOLDER: {exc}; give a new or empty folder") from None
    except RuntimeError as exc:
        raise OperationFailed(str(exc)) from None
    click.echo(str(out))
