"""``appliance console``: the web console daemon (gunicorn, or werkzeug with --dev)."""

from __future__ import annotations

import errno
import socket
from typing import Any

import click

from appliance.cli._common import Env, pass_env
from appliance.errors import OperationFailed


def check_port(host: str, port: int, setting: str) -> None:
    """Fail in one line, before any server starts, when the address is taken (gunicorn
    would retry for seconds and log a block of lines; werkzeug prints its own)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OperationFailed(f"can not listen on {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise OperationFailed(f"can not listen on {host}:{port}: {exc.strerror}") from exc
            raise OperationFailed(
                f"can not listen on {host}:{port}: the port is already in use; stop what "
                f"holds it or choose another (--port, or {setting} in the configuration)"
            ) from exc


def _gunicorn(app: Any, options: dict[str, Any]) -> None:
    from gunicorn.app.base import BaseApplication

    class ConsoleServer(BaseApplication):  # type: ignore[misc]
        """gunicorn with the app built here, from the configuration read once."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    ConsoleServer().run()


@click.command("console")
@click.option("--host", default=None, help="Address to listen on (default: console.host).")
@click.option("--port", type=int, default=None, help="TCP port (default: console.port).")
@click.option("--dev", is_flag=True,
              help="Run werkzeug's single-process development server instead of gunicorn.")
@pass_env
def console(env: Env, host: str | None, port: int | None, dev: bool) -> None:
    """Run the admin web console and its JSON API until stopped.

    Serves TLS when console.tls_cert and console.tls_key are set; over plain
    HTTP only loopback clients can log in (console.insecure_loopback).
    """
    # Under systemd (Type=notify) gunicorn's arbiter itself sends READY=1 to
    # NOTIFY_SOCKET once its listening socket is bound; it runs in this process,
    # the unit's main PID, so nothing more is needed here.
    cfg = env.config
    host = host or cfg["console.host"]
    port = cfg["console.port"] if port is None else port
    cert, key = cfg["console.tls_cert"], cfg["console.tls_key"]
    if bool(cert) != bool(key):
        raise click.UsageError("set both console.tls_cert and console.tls_key, or neither")
    if port != 0:
        check_port(host, port, "console.port")
    from appliance.console import build_app  # flask and the web stack: only here

    app = build_app(cfg, env.home)
    if dev:
        app.run(host=host, port=port, ssl_context=(cert, key) if cert else None,
                use_reloader=False)
        return
    options: dict[str, Any] = {"bind": f"{host}:{port}", "workers": cfg["console.workers"],
                               "accesslog": "-", "loglevel": cfg["log_level"]}
    if cert:
        options.update(certfile=cert, keyfile=key)
    _gunicorn(app, options)


COMMANDS = [console]
