"""What a command loads: one command of the CLI in a fresh interpreter (the test process
has imported everything by now), and ``sys.modules`` after it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def loaded_by(*args: str, home: Path | None = None) -> tuple[int, set[str], str]:
    """Exit code, loaded modules (top-level package names and full dotted names) and stderr
    of one command in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [*(["--home", str(home)] if home else []), *args]
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    modules = set(last["modules"])
    return last["code"], modules | {m.split(".")[0] for m in modules}, proc.stderr
