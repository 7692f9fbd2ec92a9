"""Fixtures of the serving tests: an in-memory model source and daemons on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.serving import MemorySource, Servers, mlp, two_io

from appliance.storage.home import Home


@pytest.fixture
def source() -> MemorySource:
    src = MemorySource()
    src.add("mlp", 1, mlp(1))
    src.add("mlp", 2, mlp(2))
    src.promote("mlp", 1)
    src.add("two", 1, two_io(1))
    src.promote("two", 1)
    return src


@pytest.fixture
def servers(home: Home) -> Iterator[Servers]:
    s = Servers(home)
    yield s
    for server in s.running:
        server.stop()
