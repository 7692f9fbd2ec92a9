"""The main job, end to end: `appliance demo --quick` on this machine."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from appliance.cli import main


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "--home", str(home), "demo", "--quick"],
        capture_output=True, text=True, timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for n in range(1, 8):
        assert f"[{n}/7]" in out
    assert "loans@1 -> loans@2" in out
    assert re.search(r"requests served: (\d+) of \1 \(0 failed\)", out), out[-1500:]
    assert re.search(r"audit: +\d+ entries, \d+ signed checkpoints, verified", out)
    assert "shadow -> canary (advance); canary -> production (advance)" in out
    drifted = re.search(r"drift found: +(.*)", out)
    assert drifted and "credit_score" in drifted.group(1) and "income" in drifted.group(1)
    before, after = map(float, re.search(
        r"live accuracy: +loans@1 ([\d.]+) -> loans@2 ([\d.]+)", out).groups())
    assert after > before
    # Without --keep every service it started is stopped again.
    port = int(re.search(r"inference: +http://127\.0\.0\.1:(\d+)/v2", out).group(1))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert (home / ".demo").is_file() and (home / "appliance.db").is_file()


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.csv").write_text("a,b\n1,2\n")
    result = CliRunner().invoke(main, ["--home", str(tmp_path / "data"), "demo", "--quick"])
    assert result.exit_code == 1
    assert "not an earlier demo's" in result.stderr
    assert (tmp_path / "data" / "precious.csv").is_file()
