"""The worker daemon and its executors; see ``appliance.worker.daemon``."""

from appliance.worker.daemon import Worker, WorkerSettings
from appliance.worker.executor import Executor, JobHandle, Launch, LocalProcessExecutor, Outcome

__all__ = ["Executor", "JobHandle", "Launch", "LocalProcessExecutor", "Outcome", "Worker",
           "WorkerSettings"]
