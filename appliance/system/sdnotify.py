"""systemd's readiness and watchdog protocol (sd_notify), without libsystemd.

A daemon calls ``notify("READY=1")`` once it serves, ``notify("WATCHDOG=1")``
at least every half of ``WatchdogSec`` while healthy, and
``notify("STOPPING=1")`` when it begins a clean shutdown. Outside systemd
(no ``NOTIFY_SOCKET``) every call does nothing and returns False.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings that systemd expects, or None when it expects none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
