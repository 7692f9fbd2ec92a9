"""Every job kind the worker runs, registered in one place.

A handler combines the services below it (training, monitoring, promotion,
drift) for one unit of queued work; it gets the worker's configuration in
``ctx.config`` and never reads the configuration file itself. The queue
stores jobs by kind name and takes this table as ``kinds=`` wherever it needs
one (submitting, running), so it never reaches up for it. The handler
contract is in ``appliance.queue.kinds``.

- ``builtin``: noop, sleep, fail, echo (diagnostics of the queue itself)
- ``training``: train, retrain, reproduce
- ``drift``: drift-check, and ``check_model``, a monitoring check that may
  start a retrain job (the CLI, the console and the demo call it too)
- ``rollout``: rollout-advance
- ``retention``: monitoring-retention
- ``capacity``: capacity-profile
- ``evals``: eval-run
- ``guardrails``: guardrails-train
"""

from __future__ import annotations

from appliance.queue.kinds import JobKind

KINDS: dict[str, JobKind] = {
    k.name: k
    for k in (
        JobKind("noop", "appliance.jobs.builtin:noop",
                "does nothing and reports where it ran (pid, GPUs, directory)"),
        JobKind("sleep", "appliance.jobs.builtin:sleep",
                "sleeps params.seconds (default 1), optionally in params.children "
                "extra processes", "appliance.jobs.builtin:validate_sleep"),
        JobKind("fail", "appliance.jobs.builtin:fail",
                "fails with params.message, to check alerting and the failure path"),
        JobKind("echo", "appliance.jobs.builtin:echo",
                "returns its parameters as its result"),
        JobKind("train", "appliance.jobs.training:run_train_job",
                "trains a model from a recipe", "appliance.jobs.training:validate_train_params"),
        JobKind("retrain", "appliance.jobs.training:run_retrain_job",
                "retrains a registered model on newer data",
                "appliance.jobs.training:validate_retrain_params"),
        JobKind("reproduce", "appliance.jobs.training:run_reproduce_job",
                "re-runs a recorded run and compares the results",
                "appliance.jobs.training:validate_reproduce_params"),
        JobKind("drift-check", "appliance.jobs.drift:run_drift_check_job",
                "computes drift for a served model against its reference",
                "appliance.jobs.drift:validate_drift_check_params"),
        JobKind("monitoring-retention", "appliance.jobs.retention:run_retention_job",
                "rolls the request log up into per-minute aggregates and deletes what is "
                "past monitoring.retention_days", "appliance.jobs.retention:validate_retention_params"),
        JobKind("capacity-profile", "appliance.jobs.capacity:run_profile_job",
                "sweeps a model version as serving loads it (batch size and concurrency, or "
                "streams and lengths) and stores its capacity profile",
                "appliance.jobs.capacity:validate_profile_params"),
        JobKind("eval-run", "appliance.jobs.evals:run_eval_job",
                "runs an evaluation set against a language-model version, scores every "
                "case and stores the run", "appliance.jobs.evals:validate_eval_params"),
        JobKind("guardrails-train", "appliance.jobs.guardrails:run_guardrails_train_job",
                "retrains the prompt-injection classifier and promotes it only when its "
                "held-out figures meet the goal", "appliance.jobs.guardrails:validate_train_params"),
        JobKind("rollout-advance", "appliance.jobs.rollout:run_rollout_job",
                "advances or rolls back staged rollouts from the request log",
                "appliance.jobs.rollout:validate_rollout_params"),
    )
}

__all__ = ["KINDS"]
