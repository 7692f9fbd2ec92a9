"""Settings: the effective configuration, read-only."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template
from werkzeug.wrappers import Response

from appliance.config import SETTINGS
from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import requires

bp = Blueprint("settings", __name__)
PERMISSION = "monitoring.read"  # every role may read how the appliance runs


def _rows() -> list[dict[str, Any]]:
    cfg = web.config()
    return [{"name": s.name, "value": cfg[s.name], "default": s.default,
             "origin": "file" if s.name in cfg.from_file else "default", "help": s.help}
            for s in SETTINGS]


@bp.get("/settings")
@requires(PERMISSION)
def page() -> str:
    cfg = web.config()
    return render_template("settings.html", rows=_rows(), source=cfg.source,
                           home=web.home().root)


@bp.get("/api/settings")
@requires(PERMISSION)
@api(returns="{source, home, settings: [{name, value, default, origin, help}]}")
def api_settings() -> Response:
    """The effective configuration: every setting, its value and where it came from."""
    cfg = web.config()
    return jsonify({"source": str(cfg.source) if cfg.source else None,
                    "home": str(web.home().root), "settings": _rows()})
