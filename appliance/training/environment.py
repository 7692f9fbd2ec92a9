"""The software environment a run used: Python, the packages that shape a model, the lock file.

Its hash is what ``runs reproduce`` compares to say whether a different
result could be explained by different software.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.audit.log import canonical_json
from appliance.errors import BadInput, OperationFailed

PACKAGES = ("appliance", "torch", "scikit-learn", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy")
LOCK_FILE = "requirements.lock"


def lock_file_hash() -> str | None:
    """SHA-256 of the ``requirements.lock`` shipped beside the installed package, if any."""
    root = Path(__file__).resolve().parent.parent.parent
    lock = root / LOCK_FILE
    if not lock.is_file():
        return None
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def capture() -> dict[str, Any]:
    from importlib import metadata  # here: importing it costs every command that lists runs

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{platform.system()}-{platform.machine()}",
        "packages": packages,
        "lock_sha256": lock_file_hash(),
    }


def env_hash(env: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(env)).hexdigest()


# Run by the script's interpreter: what it is and every distribution it can import.
_DESCRIBE = (
    "import json, platform, sys\n"
    "from importlib import metadata\n"
    "packages = {}\n"
    "for d in metadata.distributions():\n"
    "    name = d.metadata['Name']\n"
    "    if name: packages[name.lower()] = d.version\n"
    "print(json.dumps({'python': platform.python_version(), 'executable': sys.executable,"
    " 'prefix': sys.prefix, 'packages': dict(sorted(packages.items()))}))\n"
)


def python_path(wanted: str | None) -> str:
    """The interpreter a script runs under: the recipe's ``python`` (an interpreter, or a
    virtual environment's folder), else the appliance's own. BadInput when it is absent."""
    if wanted is None:
        return sys.executable
    path = Path(wanted).expanduser()
    if path.is_dir():
        candidates = [path / "bin" / "python", path / "bin" / "python3",
                      path / "Scripts" / "python.exe"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise BadInput(f"recipe field 'python': {wanted} is a folder without bin/python; "
                           "name a virtual environment or an interpreter on this machine")
        path = found
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BadInput(f"recipe field 'python': {wanted} is not an executable on this "
                       "machine; the appliance installs nothing, so the interpreter or virtual "
                       "environment must already be here")
    return str(path.absolute())


def describe_python(python: str) -> dict[str, Any]:
    """The interpreter's version and package list, asked of the interpreter itself."""
    try:
        done = subprocess.run([python, "-I", "-c", _DESCRIBE], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"could not ask {python} for its packages: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise OperationFailed(f"{python} could not list its packages: {last}")
    try:
        described: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise OperationFailed(f"{python} did not list its packages as JSON") from exc
    return described
