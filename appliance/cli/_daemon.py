"""What the daemon commands share: logging set-up and signal handlers that only set a flag."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from appliance.config import Config


class StopFlag:
    """Set by SIGTERM or SIGINT; the daemon's loop reads it and shuts down itself."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def __call__(self) -> bool:
        return self.signal is not None


def setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, str(config["log_level"]).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # APScheduler logs every run of every job at INFO; its warnings are what matter.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.root.level))
