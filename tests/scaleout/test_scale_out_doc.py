"""docs/scale-out.md is tested: its commands, options, settings and metric names exist."""

from __future__ import annotations

import re
from pathlib import Path

import click

from appliance.cli import main
from appliance.config import SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "scale-out.md").read_text()


def command_lines() -> list[str]:
    """Every `appliance ...` in an inline code span or at the start of a code-block line."""
    found = [m.group(1) for m in re.finditer(r"`(appliance [^`]+)`", DOC)]
    in_block = False
    for line in DOC.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block and line.strip().startswith("appliance "):
            found.append(line.strip())
    return found


def test_every_command_and_option_in_the_doc_exists() -> None:
    lines = command_lines()
    assert len(lines) >= 8
    for line in lines:
        words = line.split()[1:]
        cmd: click.Command = main
        ctx = click.Context(main)
        while isinstance(cmd, click.Group) and words:
            sub = cmd.get_command(ctx, words[0])
            if sub is None:
                break
            words.pop(0)
            cmd = sub
        assert not isinstance(cmd, click.Group), f"{line!r} does not name a command"
        options = {o for p in cmd.params for o in getattr(p, "opts", [])}
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{line!r}: no option {word}"


def test_every_setting_in_the_doc_exists() -> None:
    named = set(re.findall(
        r"`((?:worker|queue|gpu|serving|console|storage)\.[a-z_.]+)(?::[^`]*)?`", DOC))
    assert {"worker.executor", "worker.ray.address", "worker.ray.home"} <= named
    unknown = sorted(n for n in named if n not in SETTINGS_BY_NAME)
    assert not unknown, f"settings in docs/scale-out.md that do not exist: {unknown}"


def test_every_metric_name_in_the_doc_is_one_the_server_publishes() -> None:
    serving = (ROOT / "appliance" / "serving" / "metrics.py").read_text()
    console = (ROOT / "appliance" / "monitoring" / "gauges.py").read_text() + (
        ROOT / "appliance" / "gpu" / "telemetry.py").read_text()
    named = set(re.findall(r"`((?:nv|appliance)_[a-z_]+|DCGM_[A-Z_]+)`", DOC)) - {
        "appliance_llm_"}
    assert len(named) >= 15
    missing = sorted(n for n in named if f'"{n}"' not in serving + console)
    assert not missing, f"metrics in docs/scale-out.md that nothing publishes: {missing}"
