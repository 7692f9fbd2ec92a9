"""``appliance console`` serves with gunicorn against a real data directory and tells
systemd it is ready (sd_notify READY=1 on NOTIFY_SOCKET, as a Type=notify unit expects)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from appliance.storage.home import Home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_console_serves_with_gunicorn_and_notifies_systemd(home: Home, tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text("console:\n  workers: 1\nlog_level: warning\n")
    port = free_port()
    # A short directory: a unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sdn-") as short:
        address = os.path.join(short, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(address)
            listener.settimeout(30)
            env = {**os.environ, "NOTIFY_SOCKET": address, "APPLIANCE_CONFIG": str(config)}
            proc = subprocess.Popen(
                [sys.executable, "-m", "appliance", "--home", str(home.root), "console",
                 "--port", str(port)], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
            try:
                message = listener.recv(4096).decode()
                assert "READY=1" in message.split("\n")
                deadline = time.monotonic() + 30
                code = 0
                while time.monotonic() < deadline:
                    try:
                        code = get(f"http://127.0.0.1:{port}/login")
                        break
                    except (urllib.error.URLError, ConnectionError, TimeoutError):
                        time.sleep(0.1)
                assert code == 200, "the console answers once it said it was ready"
                assert get(f"http://127.0.0.1:{port}/api/models") == 401
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    output, _ = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    output, _ = proc.communicate()
            assert proc.returncode == 0, output
