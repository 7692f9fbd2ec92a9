"""What a job handler gets: its identity, parameters, directory, and ways to report."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config

PROGRESS_FILE = "progress.json"


class JobCancelled(Exception):
    """Raised by a handler that noticed ``ctx.cancelled`` and stopped early."""


@dataclass
class JobContext:
    """Passed to every handler; see ``appliance.queue.kinds`` for the contract."""

    job_id: int
    kind: str
    params: dict[str, Any]
    attempt: int
    workdir: Path
    home: Path
    config: Config
    gpus: tuple[int, ...] = ()
    _cancelled: bool = field(default=False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (cancel, timeout or worker shutdown)."""
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def log(self, message: str) -> None:
        """One timestamped line in the job's log."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        sys.stdout.write(f"{stamp} {message}\n")
        sys.stdout.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        """Record how far along the job is; the worker copies it into the job row."""
        fraction = min(1.0, max(0.0, float(fraction)))
        path = self.workdir.parent / PROGRESS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fraction": fraction, "message": message}))
        os.replace(tmp, path)
        if message:
            self.log(f"progress {fraction:.0%}: {message}")
