"""Fixtures of the console tests: an app on a copy of a seeded data directory, and a
logged-in client per role (see ``helpers.console`` for how the directory is seeded)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.console import ROLES, Template, client_with_session, make_app, seed

from appliance.storage.home import Home


@pytest.fixture(scope="module", name="template")
def template_fixture(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("console-template") / "home"
    opened = seed(Home(root=root))
    return Template(root, opened)


@pytest.fixture(name="console_home")
def console_home_fixture(template: Template, tmp_path: Path) -> Home:
    root = tmp_path / "console-home"
    shutil.copytree(template.root, root)
    return Home(root=root)


@pytest.fixture(name="app")
def app_fixture(console_home: Home) -> Flask:
    return make_app(console_home)


@pytest.fixture(name="client")
def client_fixture(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(name="clients")
def clients_fixture(app: Flask, template: Template) -> Iterator[dict[str, FlaskClient]]:
    """A client per role holding that role's session, plus an anonymous one."""
    out: dict[str, FlaskClient] = {"anonymous": app.test_client()}
    for role in ROLES:
        out[role] = client_with_session(app, template.sessions[role])
    yield out
