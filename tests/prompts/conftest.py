"""Fixtures of the prompt registry's tests: prompt files, and the small model served."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.llm import register, serve, wait_for
from helpers.serving import call

from appliance.serving.http.transport import ServerThread
from appliance.storage.home import Home


@pytest.fixture
def prompt_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text to a new file; its path."""
    count = iter(range(1_000_000))

    def write(text: str) -> Path:
        path = tmp_path / f"prompt-{next(count)}.yaml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def served(home: Home, tiny_model: Path) -> Iterator[ServerThread]:
    """The small model as 'chat', promoted and served on a loopback port."""
    register(home, tiny_model)
    server = serve(home)
    try:
        wait_for(lambda: call(server, "GET", "/v1/models")[2]["data"], what="chat served")
        yield server
    finally:
        server.stop()
