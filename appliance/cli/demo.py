"""``appliance demo``: the whole loop, end to end, on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from appliance.cli._common import Env, pass_env
from appliance.cli._daemon import (
    Interrupted,
    StopFlag,
    interrupt_on_signals,
    stop_when_signalled,
)

if TYPE_CHECKING:
    from appliance.demo.run import DemoSummary


def default_demo_home() -> Path:
    """Outside any checkout: $XDG_DATA_HOME/appliance-demo, else ~/.local/share/appliance-demo."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "appliance-demo"


@click.command()
@click.option("--keep", is_flag=True,
              help="Leave the four services running afterwards (Ctrl-C stops them).")
@click.option("--quick", is_flag=True, help="Fewer rows and requests (about half the time).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated data.")
@pass_env
def demo(env: Env, keep: bool, quick: bool, seed: int) -> None:
    """Show the whole loop: data, training, gates, serving, drift, retraining, rollout, audit.

    Starts the console, serving, worker and scheduler as child processes against a data
    directory of its own (--home, else APPLIANCE_HOME, else ~/.local/share/appliance-demo;
    a directory left by an earlier demo is replaced), then runs each step and checks it.
    Exits 0 only when every step did what it claims. SIGTERM, SIGINT or SIGHUP stops it
    and every service it started.
    """
    from appliance.demo.run import DemoSettings, run_demo  # numpy, the traffic client

    root = Path(env.home_option or os.environ.get("APPLIANCE_HOME") or default_demo_home())
    signalled = interrupt_on_signals()
    summary = None
    try:
        summary = run_demo(root.absolute(), DemoSettings(quick=quick, seed=seed),
                           stop_when_signalled(signalled, click.echo), keep=keep)
        stop = StopFlag(hangup=True).install()  # from here a signal only ends the wait
        _print_summary(summary)
        if summary.running is None:
            click.echo("the services are stopped; 'appliance demo --keep' leaves them running")
            return
        click.echo(f"  console:         {summary.console_url}  (login {summary.admin_user} / "
                   f"{summary.admin_password})")
        click.echo(f"  inference:       {summary.serving_url}")
        click.echo("the services keep running; Ctrl-C or SIGTERM stops them")
        dead = summary.running.wait(stop)
    except Interrupted as exc:
        click.echo(f"error: stopped by {exc.name}; the services it started are stopped",
                   err=True)
        raise SystemExit(128 + exc.signum) from None
    finally:
        if summary is not None and summary.running is not None:
            summary.running.stop()
    if dead is not None:
        click.echo(f"error: {dead.name} exited; stopped the others", err=True)
        raise SystemExit(1)


def _print_summary(summary: DemoSummary) -> None:
    click.echo("")
    click.echo(f"done in {summary.seconds:.0f} s")
    click.echo(f"  versions:        {' -> '.join(summary.versions)}")
    for version, metrics in summary.metrics.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
        click.echo(f"  {version + ':':<16} test {shown}")
    if summary.live_accuracy:
        shown = " -> ".join(f"{v} {a:.3f}" for v, a in summary.live_accuracy.items())
        click.echo(f"  live accuracy:   {shown}  (on the drifted traffic, from delayed labels)")
    click.echo(f"  drift found:     {', '.join(summary.drifted_features) or 'none'}")
    if summary.llm is not None and summary.llm.answers:
        tokens = sum(a.usage.get("total_tokens", 0) for a in summary.llm.answers)
        cost = sum(a.figures.get("cost", 0.0) for a in summary.llm.answers)
        currency = summary.llm.answers[0].figures.get("currency") or ""
        click.echo(f"  language model:  {summary.llm.version}, {len(summary.llm.answers)} "
                   f"questions answered through /v1/chat/completions, {tokens} tokens, "
                   f"cost {cost:.3g} {currency}".rstrip())
    if summary.prompts is not None:
        p = summary.prompts
        click.echo(f"  prompts:         {' -> '.join(p.versions)}, contains "
                   + ", ".join(f"{v} {s:.2f}" for v, s in p.scores.items())
                   + ("; an injection refused" if p.blocked else "") + "; rolled back")
    if summary.capacity:
        click.echo(f"  capacity:        {summary.capacity}")
    click.echo(f"  alerts:          {len(summary.alerts)}")
    click.echo(f"  rollout:         {'; '.join(summary.rollout)}")
    click.echo(f"  requests served: {summary.requests_sent - summary.requests_failed} of "
               f"{summary.requests_sent} ({summary.requests_failed} failed)")
    click.echo(f"  audit:           {summary.audit_entries} entries, "
               f"{summary.audit_checkpoints} signed checkpoints, verified")
    click.echo(f"  data directory:  {summary.home}")

COMMANDS = [demo]
