"""The layers of DESIGN.md, checked by parsing every module's imports.

storage (errors, config, storage.*) < services (every other area) < edges (cli,
console, serving.http). A module may import its own layer or lower ones; a
service never imports flask or click.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "appliance"

STORAGE, SERVICES, EDGES = 0, 1, 2
LAYER_NAMES = {STORAGE: "storage", SERVICES: "services", EDGES: "edges"}
PREFIXES = [
    ("appliance.errors", STORAGE),
    ("appliance.config", STORAGE),
    ("appliance.storage", STORAGE),
    ("appliance.cli", EDGES),
    ("appliance.__main__", EDGES),
    ("appliance.console", EDGES),
    ("appliance.serving.http", EDGES),
    ("appliance.serving.app", EDGES),
]
WEB_OR_CLI = ("flask", "click", "werkzeug", "jinja2", "gunicorn")


def layer_of(module: str) -> int | None:
    if module == "appliance" or not module.startswith("appliance."):
        return None
    best = None
    for prefix, layer in PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else SERVICES


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append(mod)
            for alias in node.names:
                found.append(f"{mod}.{alias.name}")
    return found


def violations() -> list[str]:
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        name = module_name(path)
        mine = layer_of(name)
        if mine is None:
            continue
        for imported in imports_of(path, name):
            top = imported.split(".")[0]
            if mine < EDGES and top in WEB_OR_CLI:
                problems.append(f"{name} ({LAYER_NAMES[mine]}) imports {imported}")
                continue
            theirs = layer_of(imported)
            if theirs is not None and theirs > mine:
                problems.append(
                    f"{name} ({LAYER_NAMES[mine]}) imports {imported} ({LAYER_NAMES[theirs]})"
                )
    return sorted(set(problems))


def test_imports_point_down_only() -> None:
    assert violations() == []


def test_checker_catches_an_upward_import(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    assert layer_of("appliance.storage.db") == STORAGE
    assert layer_of("appliance.registry") == SERVICES
    assert layer_of("appliance.cli._common") == EDGES
    assert layer_of("appliance.serving.http") == EDGES
    assert layer_of("appliance.serving.engine") == SERVICES
    bad = tmp_path / "bad.py"
    bad.write_text("import click\nfrom appliance.cli import main\n")
    assert "click" in imports_of(bad, "appliance.registry.bad")
    assert "appliance.cli.main" in imports_of(bad, "appliance.registry.bad")
