"""The main job, end to end: `appliance demo --quick` on this machine."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml
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
    for n in range(1, 11):
        assert f"[{n}/10]" in out
    assert "loans@1 -> loans@2" in out
    assert re.search(r"requests served: (\d+) of \1 \(0 failed\)", out), out[-1500:]
    assert re.search(r"audit: +\d+ entries, \d+ signed checkpoints, verified", out)
    assert "shadow -> canary (advance); canary -> production (advance)" in out
    # The language model built here answers its facts through OpenAI's API, with its cost.
    assert "'What is the capital of Veltria?' -> 'Orsk.'" in out
    assert re.search(r"language model: +assistant@1, 3 questions answered through "
                     r"/v1/chat/completions, \d+ tokens, cost [\d.e-]+ EUR", out), out[-1500:]
    # The production version is profiled and the demo's own traffic sized against it.
    assert re.search(r"batch 16, 4 in flight: [\d,]+ rows/s", out), out[-3000:]
    assert re.search(r"recommended max_batch_size \d+, max_queue_delay_us \d+", out)
    assert re.search(r"capacity: +the peak of [\d.]+ requests/s", out), out[-1500:]
    # The prompt loop: v2 scored and promoted through the gates, an injection refused.
    assert re.search(r"prompts: +capital@1 -> capital@2, contains capital@1 0\.00, "
                     r"capital@2 1\.00; an injection refused; rolled back", out), out[-3000:]
    drifted = re.search(r"drift found: +(.*)", out)
    assert drifted and "credit_score" in drifted.group(1) and "income" in drifted.group(1)
    before, after = map(float, re.search(
        r"live accuracy: +loans@1 ([\d.]+) -> loans@2 ([\d.]+)", out).groups())
    assert after > before
    # Without --keep every service it started is stopped, and no address or login is
    # offered for a console that is no longer there.
    assert "login" not in out and "console:" not in out, out[-1500:]
    assert "'appliance demo --keep' leaves them running" in out
    demo_config = yaml.safe_load((home / "demo.yaml").read_text())
    for port in (demo_config["serving"]["port"], demo_config["console"]["port"]):
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


def test_the_demo_keeps_its_data_outside_the_working_directory(tmp_path: Path,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from appliance.cli.demo import default_demo_home

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_demo_home() == tmp_path / "xdg" / "appliance-demo"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_demo_home() == tmp_path / "user" / ".local" / "share" / "appliance-demo"
