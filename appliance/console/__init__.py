"""The admin web console and its JSON API: ``gunicorn 'appliance.console:create_app()'``.

Configuration is read once, here, and handed to the views through
``app.config``; nothing is read from the environment afterwards. Each
resource is one blueprint (``appliance.console.views``); each view declares
the permission it needs and ``appliance.console.security`` refuses any
request whose view declares none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from appliance.config import Config, load_config, parse_config, resolve_home
from appliance.console import security, web
from appliance.console.views import BLUEPRINTS
from appliance.storage.home import Home


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the console from the configuration file, or from ``test_config``.

    ``test_config`` is ``{"home": DIR, "<setting>": value, ...}``: settings
    spelled as in the configuration file (validated the same way) and the
    data directory.
    """
    if test_config is None:
        config = load_config()
        root = resolve_home(config)
    else:
        settings = {k: v for k, v in test_config.items() if k != "home"}
        config = parse_config(settings)
        root = Path(test_config.get("home") or resolve_home(config)).absolute()
    return build_app(config, Home.from_config(root, config))


def build_app(config: Config, home: Home) -> Flask:
    """The console for an already-resolved configuration and data directory."""
    app = Flask(__name__)
    app.config.update(
        APPLIANCE_CONFIG=config,
        APPLIANCE_HOME=home,
        # Sessions are server-side (appliance.auth); Flask's signed-cookie session is unused.
        SESSION_COOKIE_NAME="appliance-unused",
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    web.init_app(app)
    security.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    security.declare_static(app)
    security.check_declared(app)
    return app
