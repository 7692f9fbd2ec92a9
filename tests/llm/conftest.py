"""Fixtures of the language-model tests: the small model served by the real daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.llm import register, serve, wait_for
from helpers.serving import call

from appliance.serving.http.transport import ServerThread
from appliance.storage.home import Home


@pytest.fixture
def served(home: Home, tiny_model: Path) -> Iterator[ServerThread]:
    """The small model as 'chat', promoted and served on a loopback port, priced at 3.6
    EUR per GPU-hour (a CPU-second costs 0.001)."""
    register(home, tiny_model)
    server = serve(home, llm__cost_per_gpu_hour=3.6, llm__currency="EUR")
    try:
        wait_for(lambda: call(server, "GET", "/v1/models")[2]["data"], what="chat served")
        yield server
    finally:
        server.stop()
