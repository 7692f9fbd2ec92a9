"""The server installer refuses a bundle that is not exactly what the vendor signed,
before anything from it runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "installer" / "install.sh"
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


def _key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def make_bundle(tmp: Path, key: Ed25519PrivateKey, *, tamper=None,  # type: ignore[no-untyped-def]
                profile: str | None = None, lock: str = "requirements.lock") -> Path:
    stage = tmp / "stage" / "appliance-9.9.9"
    (stage / "wheelhouse").mkdir(parents=True)
    (stage / "installer").mkdir()
    (stage / "wheelhouse" / "demo-1.0-py3-none-any.whl").write_bytes(b"PK not really a wheel")
    (stage / "installer" / lock).write_text("")
    manifest = {"format": "appliance.bundle/1", "version": "9.9.9"}
    if profile is not None:
        manifest["profile"] = profile
    (stage / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    sums = "".join(f"{hashlib.sha256((stage / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    (stage / "SHA256SUMS").write_text(sums)
    (stage / "SHA256SUMS.sig").write_bytes(key.sign(sums.encode()))
    if tamper:
        tamper(stage)
    out = tmp / "bundle.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(stage, arcname=stage.name)
    return out


def run_install(bundle: Path, pub: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--pubkey", str(pub), "--root", str(root),
                           str(bundle)], capture_output=True, text=True, timeout=60)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "case, tamper, words",
    [
        ("wheel byte", lambda s: _flip(s / "wheelhouse" / "demo-1.0-py3-none-any.whl"),
         "does not match SHA256SUMS"),
        ("manifest byte", lambda s: _flip(s / "MANIFEST.json"), "does not match SHA256SUMS"),
        ("extra file", lambda s: (s / "wheelhouse" / "evil-1.0-py3-none-any.whl").write_bytes(b"x"),
         "does not list"),
        ("sums edited", lambda s: (s / "SHA256SUMS").write_text(
            (s / "SHA256SUMS").read_text().replace("demo", "dem0")), "signature does not verify"),
        ("signature bit", lambda s: _flip(s / "SHA256SUMS.sig"), "signature does not verify"),
        ("no signature", lambda s: (s / "SHA256SUMS.sig").unlink(), "no SHA256SUMS and signature"),
        ("symlink", lambda s: (s / "link").symlink_to("/etc/passwd"), "links or special files"),
    ],
)
def test_tampered_bundle_is_refused_before_pip(tmp_path: Path, case: str, tamper, words: str) -> None:  # type: ignore[no-untyped-def]
    pub = tmp_path / "vendor.pem"
    key = _key(pub)
    bundle = make_bundle(tmp_path, key, tamper=tamper)
    root = tmp_path / "root"
    result = run_install(bundle, pub, root)
    assert result.returncode == 1, (case, result.stdout, result.stderr)
    assert words in result.stderr, (case, result.stderr)
    assert "refusing" in result.stderr or "signature" in result.stderr
    assert not (root / "opt").exists()  # nothing installed, pip never ran


def test_foreign_key_is_refused(tmp_path: Path) -> None:
    key = _key(tmp_path / "vendor.pem")
    foreign = tmp_path / "foreign.pem"
    _key(foreign)
    bundle = make_bundle(tmp_path, key)
    result = run_install(bundle, foreign, tmp_path / "root")
    assert result.returncode == 1 and "signature does not verify" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


def test_path_escape_is_refused(tmp_path: Path) -> None:
    pub = tmp_path / "vendor.pem"
    _key(pub)
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "p"
    payload.write_text("x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="appliance-1/../../escape")
    result = run_install(evil, pub, tmp_path / "root")
    assert result.returncode == 1 and "outside its folder" in result.stderr
    assert not (tmp_path / "escape").exists()


def test_a_good_signature_gets_past_verification(tmp_path: Path) -> None:
    # A correctly signed bundle is accepted by verification and reaches pip, which then
    # fails on this deliberately empty wheel; the real install runs in the offline test.
    pub = tmp_path / "vendor.pem"
    key = _key(pub)
    bundle = make_bundle(tmp_path, key)
    result = run_install(bundle, pub, tmp_path / "root")
    assert "signature verified" in result.stderr
    assert "pip could not install" in result.stderr
    # It says where it is while it works: numbered steps, the long pip step announced.
    assert "install: [1/6] verifying and unpacking bundle.tar.gz" in result.stdout
    assert "install: [2/6] installing the programs of 9.9.9" in result.stdout
    assert "locked packages, hash-checked" in result.stdout
    assert not (tmp_path / "root" / "opt" / "appliance" / "9.9.9").exists()


@pytest.mark.parametrize(
    "profile, lock, words",
    [
        ("cuda", "requirements-cuda.lock", "hash-checked (cuda profile;"),
        ("cpu", "requirements.lock", "hash-checked (cpu profile;"),
        (None, "requirements.lock", "hash-checked (cpu profile;"),  # made before profiles
    ],
)
def test_the_bundles_profile_picks_its_lock(tmp_path: Path, profile: str | None, lock: str,
                                            words: str) -> None:
    pub = tmp_path / "vendor.pem"
    bundle = make_bundle(tmp_path, _key(pub), profile=profile, lock=lock)
    result = run_install(bundle, pub, tmp_path / "root")
    assert words in result.stdout, result.stdout + result.stderr
    assert "pip could not install" in result.stderr  # the deliberately empty wheel, as above


@pytest.mark.parametrize(
    "profile, lock, words",
    [
        ("cuda", "requirements.lock",
         "install: the bundle has no installer/requirements-cuda.lock for its cuda profile"),
        ("tpu", "requirements.lock",
         "install: the bundle's profile 'tpu' is unknown to this installer"),
    ],
)
def test_a_bundle_without_its_profiles_lock_is_refused(tmp_path: Path, profile: str, lock: str,
                                                      words: str) -> None:
    pub = tmp_path / "vendor.pem"
    bundle = make_bundle(tmp_path, _key(pub), profile=profile, lock=lock)
    result = run_install(bundle, pub, tmp_path / "root")
    assert result.returncode == 1 and result.stderr.splitlines()[-1] == words, result.stderr
    assert not (tmp_path / "root" / "opt" / "appliance" / "9.9.9").exists()


def test_build_bundle_stops_at_once_without_the_profiles_lock(tmp_path: Path) -> None:
    # A copy of the script with no lock beside it: it must stop before downloading anything.
    (tmp_path / "installer").mkdir()
    script = tmp_path / "installer" / "build-bundle.sh"
    shutil.copy(ROOT / "installer" / "build-bundle.sh", script)
    for args in (["--key", "k.pem"], ["--profile", "cuda", "--key", "k.pem"]):  # cuda by default
        result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (
            "build-bundle: installer/requirements-cuda.lock is missing; make it on a machine "
            "that reaches PyPI with: python3 installer/lock.py --profile cuda\n")
    cpu = subprocess.run(["bash", str(script), "--profile", "cpu"], capture_output=True,
                         text=True, timeout=60)
    assert cpu.returncode == 1 and "installer/requirements.lock is missing" in cpu.stderr
    bad = subprocess.run(["bash", str(script), "--profile", "gpu"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr == "build-bundle: --profile must be cuda or cpu, not 'gpu'\n"
