"""The durable job queue: jobs in SQLite, claimed under leases, run by workers.

- ``appliance.queue.jobs``: submit, get_job, list_jobs, queue_depth, cancel_job,
  read_log, tail_log (what the CLI and the console call).
- ``appliance.queue.states``: the state Enum and its named transitions.
- ``appliance.queue.lease``: claiming, lease renewal, taking back dead workers' jobs.
- ``appliance.queue.kinds``: job kinds and the handler contract.

This package imports nothing on its own, so a job's child process starts
without loading the database layers it does not use.
"""
