"""One error style: every usage error is one line on stderr with exit 2, a failure one
line with exit 1, and nothing a user can cause ends in a traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from appliance.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _leaves(group: click.Group, prefix: list[str]) -> list[tuple[list[str], click.Command]]:
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        if isinstance(cmd, click.Group):
            found.extend(_leaves(cmd, [*prefix, name]))
        else:
            found.append(([*prefix, name], cmd))
    return found


LEAVES = _leaves(main, [])


def _bad_values(cmd: click.Command) -> list[list[str]]:
    """A bad argument for each parameter whose type can refuse one."""
    out = [["--no-such-option"]]
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.is_flag:
            continue
        name = param.opts[0]
        if isinstance(param.type, click.Choice):
            out.append([name, "no-such-choice"])
        elif isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
            out.append([name, "not-a-number"])
    return out


def _one_line_error(result: Result, code: int) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("path,cmd", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_answers_a_bad_argument_in_one_line(path: list[str], cmd: click.Command,
                                                          tmp_path: Path) -> None:
    for bad in _bad_values(cmd):
        result = CliRunner().invoke(main, ["--home", str(tmp_path / "h"), *path, *bad])
        _one_line_error(result, 2)
        assert result.stdout == "", result.stdout


def test_unknown_command_and_top_level_option() -> None:
    _one_line_error(CliRunner().invoke(main, ["no-such-command"]), 2)
    _one_line_error(CliRunner().invoke(main, ["--no-such-option"]), 2)
    result = CliRunner().invoke(main, ["users", "add", "alice", "--role", "boss"])
    _one_line_error(result, 2)
    assert "'--role'" in result.stderr and "admin" in result.stderr


def test_a_missing_data_directory_is_bad_input(tmp_path: Path) -> None:
    for args in (["models", "list"], ["users", "list"], ["audit", "verify"], ["jobs", "list"]):
        result = CliRunner().invoke(main, ["--home", str(tmp_path / "nonexistent"), *args])
        _one_line_error(result, 2)
        assert "init" in result.stderr


def test_restore_into_an_existing_home_is_bad_input(runner, home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "b.tar"
    assert runner("backup", "--out", str(out)).exit_code == 0
    _one_line_error(runner("restore", str(out)), 2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    result = CliRunner().invoke(main, ["--home", str(other), "restore", str(out)])
    _one_line_error(result, 2)
    assert (other / "notes.txt").read_text() == "mine\n"


def _cli(*args: str, prelude: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = f"{prelude}\nfrom appliance.cli import main\nmain({list(args)!r}, prog_name='appliance')"
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=full)


def test_a_port_in_use_is_one_line(runner, home, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for extra in ([], ["--dev"]):
            proc = _cli("--home", str(home.root), "console", "--host", "127.0.0.1",
                        "--port", str(port), *extra)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.strip().count("\n") == 0, proc.stderr
            assert "already in use" in proc.stderr and str(port) in proc.stderr
        proc = _cli("--home", str(home.root), "serve", "--host", "127.0.0.1", "--port", str(port))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "already in use" in proc.stderr, proc.stderr


def test_a_missing_optional_module_is_one_line(home) -> None:  # type: ignore[no-untyped-def]
    proc = _cli("--home", str(home.root), "console", "--host", "127.0.0.1", "--port", "0",
                prelude="import sys; sys.modules['flask'] = None")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("error: this command needs the Python module 'flask', "
                                   "which is not installed"), proc.stderr


def test_the_standalone_verifier_without_cryptography_can_not_check(tmp_path: Path) -> None:
    """Exit 1 means 'tampered': a missing library must not say that."""
    lone = tmp_path / "standalone_verify.py"
    shutil.copy(ROOT / "appliance" / "audit" / "standalone_verify.py", lone)
    (tmp_path / "bundle").mkdir()
    code = ("import runpy, sys\n"
            "sys.modules['cryptography'] = None\n"
            f"sys.argv = ['standalone_verify.py', '--pubkey', 'k', {str(tmp_path / 'bundle')!r}]\n"
            f"runpy.run_path({str(lone)!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    report = json.loads(proc.stdout)
    assert report["ok"] is False and "cryptography" in report["reason"], report
    assert "Traceback" not in proc.stderr
