"""Commands start fast: the heavy libraries are imported where they are used.

Each check runs in a fresh interpreter (the test process itself has imported
everything by now) and looks at ``sys.modules`` after the command ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers.startup import ROOT, loaded_by

from appliance.cli import TABLE, all_commands, main
from appliance.storage.home import Home

HEAVY = ("torch", "scipy", "onnxruntime", "onnx", "flask", "sklearn")

def test_importing_the_cli_pulls_in_no_heavy_library() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, appliance.cli; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=120, env=env, check=True)
    loaded = {m.split(".")[0] for m in proc.stdout.split()}
    assert not loaded & set(HEAVY), f"import appliance.cli loads {sorted(loaded & set(HEAVY))}"
    # Nor the data layer: --version and --help never open a database.
    assert not loaded & {"sqlite_utils", "numpy", "yaml"}, sorted(loaded)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["models", "--help"]])
def test_version_and_help_load_nothing_heavy(args: list[str]) -> None:
    code, loaded, err = loaded_by(*args)
    assert code == 0, err
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    if args[0].startswith("--"):
        assert "sqlite_utils" not in loaded and "numpy" not in loaded


LISTINGS = [
    ["models", "list"], ["datasets", "list"], ["jobs", "list"], ["runs", "list"],
    ["users", "list"], ["tokens", "list"], ["schedules", "list"], ["alerts"],
    ["audit", "log"], ["audit", "verify"], ["models", "show", "nothing"], ["jobs", "show", "1"],
    ["config", "show"], ["gpu"], ["prompts", "list"], ["prompts", "show", "nothing"],
]
#: What a listing or showing command must not load: numpy alone costs about 0.3 s, and
#: sqlite-utils (which imports numpy) is not how the appliance opens its databases;
#: cryptography, APScheduler and NVML only where the command needs them (NEEDS); nor the
#: write paths and daemons, whose records a listing reads through lighter modules.
NOT_FOR_LISTINGS = {*HEAVY, "numpy", "sqlite_utils", "pandas", "transformers", "tokenizers",
                    "cryptography", "apscheduler", "pynvml",
                    "appliance.training.service", "appliance.promotion.service",
                    "appliance.promotion.gates", "appliance.promotion.rollout",
                    "appliance.prompts.promotion", "appliance.cli._daemon",
                    "appliance.scheduler.daemon", "appliance.worker.daemon"}
#: The libraries a command does need: the audit checkpoints' Ed25519 signatures, the
#: GPUs. (Listing schedules reads the next run time each keeps; the cron library is loaded
#: only where one has passed without a scheduler to fire it.)
NEEDS = {"audit verify": {"cryptography"}, "gpu": {"pynvml"}}


def _not_needed(args: list[str], loaded: set[str]) -> list[str]:
    return sorted(loaded & (NOT_FOR_LISTINGS - NEEDS.get(" ".join(args), set())))


@pytest.mark.parametrize("args", LISTINGS, ids=lambda a: " ".join(a))
def test_listing_commands_load_nothing_heavy(args: list[str], home: Home, runner) -> None:  # type: ignore[no-untyped-def]
    assert runner("init").exit_code == 0  # the audit key too
    code, loaded, err = loaded_by(*args, home=home.root)
    assert code == (2 if args[-1] in ("nothing", "1") else 0), err  # a missing name is exit 2
    assert not _not_needed(args, loaded), _not_needed(args, loaded)


def test_listing_and_showing_real_rows_loads_nothing_heavy(tmp_path: Path) -> None:
    """Every command of the start-up benchmark, against a data directory with a model, a
    dataset, a run, a job, a schedule, a prompt, evaluation runs and a capacity profile,
    so that each shows something (a missing name would stop before the printing)."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.bench.bench_cli import COMMANDS, seed_home

    root = tmp_path / "seeded"
    seed_home(root)

    def probe(args: list[str]) -> tuple[list[str], int, set[str], str]:
        return (args, *loaded_by(*args, home=root))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(probe, COMMANDS))
    failed = [f"{' '.join(args)}: exit {code}: {err.strip()[-300:]}"
              for args, code, _, err in results if code != 0]
    assert not failed, failed
    heavy = {" ".join(args): _not_needed(args, loaded)
             for args, _, loaded, _ in results if _not_needed(args, loaded)}
    assert not heavy, heavy
    # The allowances are used: each needing command does load its library.
    for args, _, loaded, _ in results:
        assert loaded >= NEEDS.get(" ".join(args), set()), (args, NEEDS[" ".join(args)])


def test_the_benchmark_covers_every_list_and_show_command() -> None:
    from tests.bench.bench_cli import COMMANDS

    def walk(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        if isinstance(cmd, click.Group):
            return [p for name, sub in cmd.commands.items() for p in walk(sub, (*path, name))]
        return [path]

    paths = [p for name, cmd in all_commands().items() for p in walk(cmd, (name,))]
    listings = {p for p in paths if p[-1] in ("list", "show")}
    assert len(listings) >= 10, listings  # the walk found the commands
    covered = {tuple(c[:len(p)]) for c in COMMANDS for p in listings if tuple(c[:len(p)]) == p}
    assert listings <= covered, sorted(listings - covered)


def test_the_command_table_matches_the_modules() -> None:
    """The table that lets --help list commands without importing them tells the truth."""
    commands = all_commands()
    assert set(commands) == set(TABLE)
    for name, cmd in commands.items():
        module, line = TABLE[name]
        assert cmd.callback is not None
        assert cmd.callback.__module__.startswith(f"appliance.cli.{module}") or \
            isinstance(cmd, click.Group), name
        assert line == cmd.get_short_help_str(limit=300), (
            f"TABLE[{name!r}] says {line!r}; the command's help starts "
            f"{cmd.get_short_help_str(limit=300)!r}")
    # Every module's COMMANDS are in the table (a new command needs a row).
    import importlib
    import pkgutil

    import appliance.cli as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"appliance.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            assert TABLE.get(command.name, ("",))[0] == info.name, command.name
    assert main.get_command(click.Context(main), "no-such-command") is None


def test_a_fresh_process_sees_every_subcommand() -> None:
    """Loading one command's module alone (as 'appliance NAME ...' does) gives the same
    subcommands as loading them all: none is attached by a module that was not loaded."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    groups = {name: sorted(cmd.commands) for name, cmd in all_commands().items()
              if isinstance(cmd, click.Group)}
    script = ("import sys, click\n"
              "from appliance.cli import main\n"
              "cmd = main.get_command(click.Context(main), sys.argv[1])\n"
              "print(' '.join(sorted(cmd.commands)))\n")

    def fresh(name: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    with ThreadPoolExecutor(4) as pool:
        seen = dict(zip(groups, pool.map(fresh, groups), strict=True))
    assert seen == groups
