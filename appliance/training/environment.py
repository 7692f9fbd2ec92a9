"""The software environment a run used: Python, the packages that shape a model, the lock file.

Its hash is what ``runs reproduce`` compares to say whether a different
result could be explained by different software.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from appliance.audit.log import canonical_json

PACKAGES = ("appliance", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy")
LOCK_FILE = "requirements.lock"


def lock_file_hash() -> str | None:
    """SHA-256 of the ``requirements.lock`` shipped beside the installed package, if any."""
    root = Path(__file__).resolve().parent.parent.parent
    lock = root / LOCK_FILE
    if not lock.is_file():
        return None
    return hashlib.sha256(lock.read_bytes()).hexdigest()


def capture() -> dict[str, Any]:
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
