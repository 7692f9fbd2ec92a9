"""The layers of docs/architecture.md, checked package by package.

The architecture doc holds one ordered table of packages, lowest first. A
module may import its own package or one ranked below it, never one above or
beside it; imports made inside functions count too, since they only hide a
loop. Below the edges, nothing imports flask, click or the web stack.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "appliance"
DOC = ROOT / "docs" / "architecture.md"
WEB_OR_CLI = ("flask", "click", "werkzeug", "jinja2", "gunicorn")
EDGES = ("appliance.serving.http", "appliance.console", "appliance.cli", "appliance.__main__")
# Below the edges, jinja2 only as the sandbox that renders a language model's chat template.
TEMPLATE_SANDBOX = {"appliance.llm.chat": ("jinja2.sandbox", "jinja2.exceptions")}
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(appliance(?:\.[\w.]+)?)`\s*\|")


def documented_order(text: str | None = None) -> list[str]:
    """The packages of the architecture doc's layer table, lowest rank first."""
    rows = [ROW.match(line) for line in (text if text is not None else DOC.read_text()).splitlines()]
    ranked = [(int(m.group(1)), m.group(2)) for m in rows if m]
    ranks = [r for r, _ in ranked]
    if ranks != list(range(1, len(ranked) + 1)):
        raise AssertionError(f"the layer table's ranks must run 1, 2, 3...; they are {ranks}")
    return [name for _, name in ranked]


def rank_of(module: str, order: list[str]) -> int | None:
    """The rank of the longest entry that ``module`` is or lies under; None outside appliance.

    A name that is no module of its own (``appliance.__version__``) belongs to the
    package that defines it.
    """
    if module != "appliance" and not module.startswith("appliance."):
        return None
    parts = module.split(".")
    while parts:
        name = ".".join(parts)
        if name in order:
            return order.index(name)
        parts.pop()
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, source: str | None = None) -> list[str]:
    """Every module a file imports, at any depth (functions, TYPE_CHECKING blocks)."""
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
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


def check_module(name: str, imported: list[str], order: list[str]) -> list[str]:
    mine = rank_of(name, order)
    if mine is None:
        return [f"{name} lies in no package of the layer table"]
    edge = any(name == e or name.startswith(e + ".") for e in EDGES)
    problems = []
    for target in imported:
        if not edge and target.split(".")[0] in WEB_OR_CLI:
            if target.startswith(TEMPLATE_SANDBOX.get(name, ())):
                continue
            problems.append(f"{name} imports {target}; only the edges may")
            continue
        theirs = rank_of(target, order)
        if theirs is None or theirs <= mine:
            continue  # outside the appliance, below, or its own package
        problems.append(f"{name} (rank {mine + 1}, {order[mine]}) imports {target} "
                        f"(rank {theirs + 1}, {order[theirs]})")
    return problems


def violations(order: list[str] | None = None) -> list[str]:
    order = order if order is not None else documented_order()
    problems: list[str] = []
    for path in sorted(PKG.rglob("*.py")):
        name = module_name(path)
        problems.extend(check_module(name, imports_of(path, name), order))
    return sorted(set(problems))


def test_every_package_has_its_rank_in_the_doc() -> None:
    order = documented_order()
    packages = {f"appliance.{p.name}" for p in PKG.iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    modules = {f"appliance.{p.stem}" for p in PKG.glob("*.py") if p.stem != "__init__"}
    listed = set(order)
    assert packages | modules <= listed | {"appliance"}, sorted((packages | modules) - listed)
    assert len(order) == len(listed), "a package is listed twice"
    assert order[0] == "appliance"


def test_imports_point_down_only() -> None:
    assert violations() == []


def test_the_checker_can_fail(tmp_path: Path) -> None:
    order = documented_order()
    assert rank_of("appliance.storage.db", order) < rank_of("appliance.registry", order)
    assert rank_of("appliance.serving.engine", order) < rank_of("appliance.serving.http", order)
    assert rank_of("appliance.__version__", order) == 0
    assert rank_of("numpy", order) is None
    path = tmp_path / "bad.py"
    planted = {
        # a service reaching up to the CLI, and to the web stack
        "import click\nfrom appliance.cli import main\n": "appliance.registry.bad",
        # a loop between two services, hidden inside a function
        "def f():\n    from appliance.promotion import promote\n": "appliance.serving.bad",
        # a job handler imported from the queue below it
        "from appliance.jobs import KINDS\n": "appliance.queue.bad",
        # relative, one package up and across
        "from ..monitoring import check\n": "appliance.drift.bad",
    }
    for source, name in planted.items():
        found = check_module(name, imports_of(path, name, source), order)
        assert found, f"{name} importing {source!r} went unnoticed"
    assert any("click" in p for p in check_module(
        "appliance.registry.bad", imports_of(path, "appliance.registry.bad",
                                             "import click\n"), order))
    fine = "from appliance.errors import BadInput\nfrom . import refs\n"
    assert check_module("appliance.registry.ok", imports_of(path, "appliance.registry.ok", fine),
                        order) == []


def test_the_doc_table_is_read_strictly() -> None:
    table = "| 1 | `appliance` | root |\n| 3 | `appliance.errors` | errors |\n"
    try:
        documented_order(table)
    except AssertionError as exc:
        assert "1, 2, 3" in str(exc)
    else:
        raise AssertionError("a gap in the ranks went unnoticed")
