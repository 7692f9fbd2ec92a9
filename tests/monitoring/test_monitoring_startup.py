"""`monitoring traffic` and `llm usage` read monitoring.db only: they start without the audit
log, the registry and their cryptography, which the other monitoring commands need."""

from __future__ import annotations

import pytest
from helpers.startup import loaded_by

from appliance.storage.home import Home

HEAVY = ("appliance.audit", "appliance.registry", "cryptography")


@pytest.mark.parametrize("args", [("monitoring", "traffic", "m", "--window", "60"),
                                  ("llm", "usage", "--since", "24h")])
def test_reading_traffic_and_usage_loads_no_audit_log(home: Home, args: tuple[str, ...]) -> None:
    code, modules, err = loaded_by(*args, home=home.root)
    assert code in (0, None), err
    loaded = sorted(m for m in modules if m.startswith(HEAVY))
    assert loaded == [], loaded
