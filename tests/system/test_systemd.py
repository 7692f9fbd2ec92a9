"""The systemd units: they lint clean, are hardened as documented, and sd_notify works."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.system.sdnotify import notify, watchdog_interval

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "systemd").glob("*.service"))
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def _units_with_real_binary(tmp_path: Path) -> list[Path]:
    # verify checks that ExecStart exists; point it at this checkout's CLI.
    binary = Path(sys.executable).parent / "appliance"
    out = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/appliance/current/bin/appliance", str(binary))
        target = tmp_path / unit.name
        target.write_text(text)
        out.append(target)
    return out


def test_four_units_exist() -> None:
    assert [u.name for u in UNITS] == [
        "appliance-console.service", "appliance-scheduler.service",
        "appliance-serving.service", "appliance-worker.service",
    ]


@needs_analyze
def test_units_verify(tmp_path: Path) -> None:
    for unit in _units_with_real_binary(tmp_path):
        result = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)],
                                capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr.strip(), (unit.name, result.stderr)


@needs_analyze
def test_exposure_within_goals() -> None:
    goals = {"appliance-console.service": 1.0, "appliance-serving.service": 2.0,
             "appliance-worker.service": 2.0, "appliance-scheduler.service": 1.0}
    for unit in UNITS:
        result = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)],
                                capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
        assert m, result.stdout[-500:]
        assert float(m.group(1)) <= goals[unit.name], (unit.name, m.group(1))


def test_hardening_is_as_documented() -> None:
    for unit in UNITS:
        text = unit.read_text()
        for line in ("User=appliance", "ProtectSystem=strict", "ReadWritePaths=/var/lib/appliance",
                     "PrivateTmp=yes", "ProtectHome=yes", "NoNewPrivileges=yes",
                     "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
                     "UMask=0077", "Restart=on-failure", "RestrictAddressFamilies="):
            assert line in text, (unit.name, line)
        if "worker" in unit.name or "serving" in unit.name:
            assert "DevicePolicy=closed" in text and "DeviceAllow=char-nvidia rw" in text
            assert "PrivateDevices=yes" not in text  # it would hide the GPU
        if "worker" in unit.name or "scheduler" in unit.name:
            assert "PrivateNetwork=yes" in text
        if "console" in unit.name or "serving" in unit.name:
            assert "IPAddressDeny=any" in text and "IPAddressAllow=localhost" in text


def test_sd_notify_reaches_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=serving") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None


@pytest.mark.parametrize("daemon", ["worker", "scheduler"])
def test_daemons_report_ready_and_stopping(tmp_path: Path, home, daemon: str) -> None:  # type: ignore[no-untyped-def]
    import signal

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=str(path))
        log = tmp_path / "daemon.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "--home", str(home.root), daemon],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert server.recv(4096).startswith(b"READY=1")
            proc.send_signal(signal.SIGTERM)
            assert server.recv(4096) == b"STOPPING=1"
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_up_gives_the_worker_time_to_hand_its_jobs_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 'appliance up' stopped everything with a fixed 20 s grace, shorter than the worker's
    # default 30 s + 10 s drain: on Ctrl-C a running job was SIGKILLed with its worker
    # instead of being handed back, and its attempt was lost.
    from click.testing import CliRunner

    from appliance.cli import main
    from appliance.cli import up as up_module

    graces: list[float] = []

    class FakeSupervisor:
        def __init__(self, **kw: object) -> None:
            self.log_dir = tmp_path / "logs"

        def start(self, services: object) -> None:
            pass

        def wait(self, stop: object) -> None:
            return None  # as if Ctrl-C came at once

        def stop(self, grace_s: float = 20.0) -> dict[str, int | None]:
            graces.append(grace_s)
            return {}

    monkeypatch.setattr(up_module, "Supervisor", FakeSupervisor)
    monkeypatch.setattr(up_module.StopFlag, "install", lambda self: self)  # keep pytest's
    cfg = tmp_path / "c.yaml"
    cfg.write_text("worker:\n  shutdown_grace_s: 45\n  kill_grace_s: 15\n")
    result = CliRunner().invoke(main, ["--config", str(cfg), "--home", str(tmp_path / "h"), "up"])
    assert result.exit_code == 0, result.output
    assert graces and graces[0] > 45 + 15
