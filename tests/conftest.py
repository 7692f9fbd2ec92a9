"""Shared fixtures: an initialised data directory, its databases, and a CLI runner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from appliance.cli import main
from appliance.config import parse_config
from appliance.storage.db import Database
from appliance.storage.home import Home, init_home


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No test may read the host's configuration or data directory.
    monkeypatch.delenv("APPLIANCE_HOME", raising=False)
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "no-config.yaml"))
    (tmp_path / "no-config.yaml").write_text("{}\n")


@pytest.fixture
def config() -> Any:
    return parse_config({})


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(root=tmp_path / "home")
    init_home(h)
    return h


@pytest.fixture
def db(home: Home) -> Iterator[Database]:
    database = home.db()
    yield database
    database.close()


class Runner:
    """Runs ``appliance --home HOME ...`` in-process."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self._runner.invoke(main, ["--home", str(self.home), *args], input=input)


@pytest.fixture
def runner(home: Home) -> Runner:
    return Runner(home.root)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small language model, built once per test session (about half a minute)."""
    from appliance.llm import tiny

    return tiny.build(tmp_path_factory.mktemp("llm") / "tiny")
