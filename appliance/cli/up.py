"""``appliance up``: all four services as children of one process."""

from __future__ import annotations

import click

from appliance.cli._common import Env, pass_env
from appliance.cli._daemon import StopFlag
from appliance.storage.home import init_home
from appliance.system.supervisor import SERVICES, Supervisor, stop_grace_s


@click.command()
@click.option("--serving-port", type=click.IntRange(1, 65535), default=None,
              help="Port of the inference server (default: serving.port).")
@click.option("--console-port", type=click.IntRange(1, 65535), default=None,
              help="Port of the console (default: console.port).")
@pass_env
def up(env: Env, serving_port: int | None, console_port: int | None) -> None:
    """Run the console, serving, worker and scheduler as children of this process.

    For a laptop or a demo; on a server systemd runs them. Stops them all on Ctrl-C or
    SIGTERM or SIGHUP, or when any one of them exits; they also stop when this
    process is killed. Their logs are in <home>/logs/.
    """
    init_home(env.home)
    extra = {}
    if serving_port:
        extra["serve"] = ["--port", str(serving_port)]
    if console_port:
        extra["console"] = ["--port", str(console_port)]
    sup = Supervisor(home=env.home.root, log_dir=env.home.root / "logs", extra_args=extra,
                     config_file=env.config_option)
    stop = StopFlag(hangup=True).install()
    sup.start(SERVICES)
    cfg = env.config
    click.echo(f"serving  http://{cfg['serving.host']}:{serving_port or cfg['serving.port']}/v2")
    click.echo(f"console  http://{cfg['console.host']}:{console_port or cfg['console.port']}/")
    click.echo(f"logs     {sup.log_dir}/   (Ctrl-C stops everything)")
    dead = sup.wait(stop)
    codes = sup.stop(grace_s=stop_grace_s(env.config))
    if dead is not None:
        click.echo(f"error: {dead.name} exited with status {codes[dead.name]}; stopped the others. "
                   f"Its log ends:\n{sup.tail(dead)}", err=True)
        raise SystemExit(1)
    click.echo("stopped")


COMMANDS = [up]
