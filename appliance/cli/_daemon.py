"""What the daemon commands share: logging set-up and signal handlers that only set a flag."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from types import FrameType

from appliance.config import Config


class StopFlag:
    """Set by SIGTERM or SIGINT (and SIGHUP with ``hangup``: a closed terminal, for the
    commands that hold children); the daemon's loop reads it and shuts down itself."""

    def __init__(self, hangup: bool = False) -> None:
        self.signal: int | None = None
        self.signals = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if hangup else ())

    def install(self) -> StopFlag:
        for signum in self.signals:
            signal.signal(signum, self._handler)
        return self

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    def __call__(self) -> bool:
        return self.signal is not None


class Interrupted(BaseException):
    """Raised in the main thread by the first SIGTERM, SIGINT or SIGHUP while a command
    that holds children (the demo) works through its steps, so that its ``finally``
    stops them. A BaseException, as KeyboardInterrupt is: no ``except Exception`` in a
    step may swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def interrupt_on_signals() -> StopFlag:
    """The first of SIGTERM, SIGINT, SIGHUP raises :class:`Interrupted`; later ones only set
    the flag, so that the clean-up the first one started runs to its end."""
    flag = StopFlag(hangup=True)

    def handler(signum: int, frame: FrameType | None) -> None:
        first = flag.signal is None
        flag.signal = signum
        if first:
            raise Interrupted(signum)

    for signum in flag.signals:
        signal.signal(signum, handler)
    return flag


def stop_when_signalled(flag: StopFlag, say: Callable[[str], None]) -> Callable[[str], None]:
    """``say``, raising :class:`Interrupted` first when a signal has come.

    The handler's exception is lost when the signal lands while a finaliser (a ``__del__``,
    a weakref callback) runs: Python prints "Exception ignored" and carries on, and the
    flag, already set, keeps later signals from raising. A command that reports each step
    through this function stops at its next line instead of running to its end."""

    def checked(line: str) -> None:
        if flag.signal is not None:
            raise Interrupted(flag.signal)
        say(line)

    return checked


def setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=getattr(logging, str(config["log_level"]).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # APScheduler logs every run of every job at INFO; its warnings are what matter.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.root.level))
