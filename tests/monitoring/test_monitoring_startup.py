"""`monitoring traffic` and `llm usage` read monitoring.db only: they start without the audit
log, the registry and their cryptography, which the other monitoring commands need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.storage.home import Home

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from appliance.cli import main
try:
    main(sys.argv[1:], prog_name="appliance")
except SystemExit as exc:
    code = exc.code
print("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
HEAVY = ("appliance.audit", "appliance.registry", "cryptography")


@pytest.mark.parametrize("args", [("monitoring", "traffic", "m", "--window", "60"),
                                  ("llm", "usage", "--since", "24h")])
def test_reading_traffic_and_usage_loads_no_audit_log(home: Home, args: tuple[str, ...]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", PROBE, "--home", str(home.root), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["code"] in (0, None), proc.stdout + proc.stderr
    loaded = [m for m in found["modules"] if m.startswith(HEAVY)]
    assert loaded == [], loaded
