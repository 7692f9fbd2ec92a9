"""The hashed lock file agrees with pyproject.toml."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("lock", ROOT / "installer" / "lock.py")
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
sys.modules["lock"] = lock
_spec.loader.exec_module(lock)


def _public(version: str) -> str:
    return version.split("+", 1)[0]


def check(pyproject_deps: list[str], lock_text: str) -> list[str]:
    problems = []
    if lock.lock_digest(lock_text) != lock.dependencies_digest(pyproject_deps):
        problems.append("lock header does not match pyproject's dependencies: run installer/lock.py")
    entries = lock.parse_lock(lock_text)
    for dep in pyproject_deps:
        m = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^;\s]+)", dep)
        if not m:
            problems.append(f"pyproject dependency {dep!r} is not pinned with ==")
            continue
        name, version = lock.normalise(m.group(1)), m.group(2)
        locked = {_public(v) for v, _, _ in entries.get(name, [])}
        if version not in locked:
            problems.append(f"{name}=={version} in pyproject, {sorted(locked) or 'absent'} in lock")
    return problems


def test_lock_matches_pyproject() -> None:
    text = (ROOT / "installer" / "requirements.lock").read_text()
    assert check(lock.dependencies(), text) == []
    entries = lock.parse_lock(text)
    assert len(entries) >= 20  # transitive dependencies are locked too
    for name, rows in entries.items():
        for _version, _marker, hashes in rows:
            assert hashes, name


def test_each_locked_extra_has_a_lock_of_its_own() -> None:
    for extra in lock.LOCKED_EXTRAS:
        text = lock.extra_lock(extra).read_text()
        deps = lock.dependencies(extra=extra)
        assert check(deps, text) == [], extra
        assert set(lock.parse_lock((ROOT / "installer" / "requirements.lock").read_text())) < \
            set(lock.parse_lock(text))  # the runtime set, and the extra's beside it


def test_check_catches_disagreement() -> None:
    text = (ROOT / "installer" / "requirements.lock").read_text()
    deps = lock.dependencies()
    bumped = [re.sub(r"^click==.*", "click==0.0.1", d) for d in deps]
    problems = check(bumped, text)
    assert any("header" in p for p in problems)
    assert any("click==0.0.1" in p for p in problems)
    assert check(deps + ["requests"], text)


def test_malformed_lock_is_rejected() -> None:
    with pytest.raises(ValueError, match="line 1"):
        lock.parse_lock("flask>=3 --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="sha256"):
        lock.parse_lock("flask==3.1.3 --hash=md5:abcd\n")
