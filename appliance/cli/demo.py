"""``appliance demo``: the whole loop, end to end, on this machine."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.cli._common import Env, pass_env
from appliance.cli._daemon import StopFlag
from appliance.demo.run import DemoSettings, run_demo

DEFAULT_DEMO_HOME = "appliance-demo"


@click.command()
@click.option("--keep", is_flag=True,
              help="Leave the four services running afterwards (Ctrl-C stops them).")
@click.option("--quick", is_flag=True, help="Fewer rows and requests (about half the time).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated data.")
@pass_env
def demo(env: Env, keep: bool, quick: bool, seed: int) -> None:
    """Show the whole loop: data, training, gates, serving, drift, retraining, rollout, audit.

    Starts the console, serving, worker and scheduler as child processes against a data
    directory of its own (--home, else APPLIANCE_HOME, else ./appliance-demo; a directory
    left by an earlier demo is replaced), then runs each step and checks it. Exits 0 only
    when every step did what it claims.
    """
    root = Path(env.home_option or os.environ.get("APPLIANCE_HOME") or DEFAULT_DEMO_HOME)
    summary = run_demo(root.absolute(), DemoSettings(quick=quick, seed=seed), click.echo,
                       keep=keep)
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
    click.echo(f"  alerts:          {len(summary.alerts)}")
    click.echo(f"  rollout:         {'; '.join(summary.rollout)}")
    click.echo(f"  requests served: {summary.requests_sent - summary.requests_failed} of "
               f"{summary.requests_sent} ({summary.requests_failed} failed)")
    click.echo(f"  audit:           {summary.audit_entries} entries, "
               f"{summary.audit_checkpoints} signed checkpoints, verified")
    click.echo(f"  data directory:  {summary.home}")
    click.echo(f"  console:         {summary.console_url}  (login admin / "
               f"{summary.admin_password})")
    click.echo(f"  inference:       {summary.serving_url}")
    if summary.running is not None:
        click.echo("the services keep running; Ctrl-C or SIGTERM stops them")
        dead = summary.running.wait(StopFlag().install())
        summary.running.stop()
        if dead is not None:
            click.echo(f"error: {dead.name} exited; stopped the others", err=True)
            raise SystemExit(1)


COMMANDS = [demo]
