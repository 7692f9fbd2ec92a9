"""``appliance serve``: the inference daemon (Open Inference Protocol, KServe V2)."""

from __future__ import annotations

import logging

import click

from appliance.cli._common import Env, pass_env
from appliance.config import parse_config


@click.command()
@click.option("--host", default=None, help="Address to listen on (default: serving.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="TCP port (default: serving.port; 0 picks a free one).")
@pass_env
def serve(env: Env, host: str | None, port: int | None) -> None:
    """Serve every model with a production alias over the V2 inference protocol.

    Runs until SIGTERM or SIGINT. Models are swapped without a restart when an alias moves.
    The same application runs under gunicorn with
    `gunicorn -k asgi -w 1 'appliance.serving.http:create_app()'`.
    """
    from appliance.serving.http import create_app, run

    config = env.config
    overrides = {k: v for k, v in (("serving.host", host), ("serving.port", port))
                 if v is not None}
    if overrides:
        values = dict(config.as_dict())
        values.update(overrides)
        config = parse_config(values, source=config.source)
    logging.basicConfig(level=config["log_level"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home = env.home
    home.db().close()  # fail now, with the message saying to run 'appliance init', if it is missing
    app = create_app(config, home=home)
    run(app, config["serving.host"], config["serving.port"])


COMMANDS = [serve]
