"""Docs that are tested: every command has help and a line in docs/cli.md; every setting is documented."""

from __future__ import annotations

from pathlib import Path

import click

from appliance.cli import main
from appliance.config import SETTINGS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in sorted(group.list_commands(ctx)):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        path = f"{prefix} {name}"
        found.append((path, cmd))
        if isinstance(cmd, click.Group):
            found.extend(_walk(cmd, path))
    return found


def test_every_command_has_help_and_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _walk(main, "appliance")
    assert len(commands) >= 4
    missing_help = [p for p, c in commands if not (c.help or "").strip()]
    assert not missing_help, f"commands without help text: {missing_help}"
    leaves = [p for p, c in commands if not isinstance(c, click.Group)]
    undocumented = [p for p in leaves if f"`{p}" not in text]
    assert not undocumented, f"commands missing from docs/cli.md: {undocumented}"


def test_every_option_has_help() -> None:
    for path, cmd in _walk(main, "appliance"):
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert (param.help or "").strip(), f"{path} {param.opts[0]} has no help text"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    undocumented = [s.name for s in SETTINGS if f"| `{s.name}` |" not in text]
    assert not undocumented, f"settings missing from docs/configuration.md: {undocumented}"
    for s in SETTINGS:
        assert s.help.strip(), f"setting {s.name} has no help"
