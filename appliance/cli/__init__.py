"""The ``appliance`` command: parse, call one service function, print.

Commands live in the modules of this package, each exporting ``COMMANDS``.
The table below names each top-level command's module and the one line that
``appliance --help`` shows, so that ``--version``, ``--help`` and every
command load only the module they need: the services below pull in SQLite,
numpy and, for some, scipy or torch, which a user waiting for a listing
should not pay for (tests/cli checks the table against the modules).

Expected failures are ``ApplianceError``s, turned into one line on stderr and
exit 1 (a failed operation) or 2 (bad usage or input); click's own usage
errors are one line and exit 2 as well. Nothing else is caught: a traceback
means a bug.
"""

from __future__ import annotations

import importlib

import click

from appliance import __version__
from appliance.cli._common import Env
from appliance.cli._errors import ApplianceGroup

#: command name -> (module in this package, the line ``appliance --help`` shows)
TABLE: dict[str, tuple[str, str]] = {
    "alerts": ("monitoring", "List open and acknowledged alerts (newest first); see 'alerts ack'."),
    "audit": ("audit", "Read, verify, anchor and export the signed audit trail."),
    "backup": ("backup", "Write a consistent online backup: database snapshots, blobs, keys and a hash manifest."),
    "capacity": ("capacity", "Measure what a model version serves, and size serving to the traffic it gets."),
    "config": ("system", "Inspect the configuration."),
    "console": ("console", "Run the admin web console and its JSON API until stopped."),
    "datasets": ("datasets", "Register and inspect immutable dataset versions."),
    "demo": ("demo", "Show the whole loop: data, training, gates, serving, drift, retraining, rollout, audit."),
    "doctor": ("system", "Check the installation: databases, migrations, blobs, permissions, disk, GPUs, the bundle's profile against the GPUs, and whether torch and onnxruntime use them."),
    "drift": ("drift", "Data and prediction drift between a reference and current data."),
    "evals": ("evals", "Evaluation sets of language models: register, run, report and compare."),
    "feedback": ("monitoring", "Delayed labels (ground truth) for served predictions."),
    "gpu": ("gpu", "Print the GPUs (NVML): memory, utilisation, and memory held by jobs and serving."),
    "guardrails": ("guardrails", "Run-time guardrails for language models: train and test the injection classifier, check a text."),
    "init": ("system", "Create the data directory and databases, and apply pending migrations."),
    "jobs": ("jobs", "Submit, inspect and cancel queued jobs."),
    "llm": ("llm", "Language models served over OpenAI's API: an example model, usage and cost."),
    "models": ("models", "The model registry: versions, aliases and their history, tags."),
    "monitoring": ("monitoring", "Traffic of served models and their retraining policies."),
    "prompts": ("prompts", "The prompt registry: templates for a language model, versions, aliases, promotion."),
    "restore": ("backup", "Restore a backup into an empty data directory, verifying every file first."),
    "runs": ("train", "Inspect and reproduce training runs."),
    "scheduler": ("schedules", "Run the scheduler daemon (only one may run): queue each schedule's jobs on time."),
    "schedules": ("schedules", "Cron schedules that queue jobs (retraining, drift checks, checkpoints)."),
    "serve": ("serve", "Serve every model with a production alias over the V2 inference protocol."),
    "tokens": ("users", "Manage API tokens for scripts and inference clients."),
    "train": ("train", "Train RECIPE.yaml and register the model version it produces; prints the run id."),
    "up": ("up", "Run the console, serving, worker and scheduler as children of this process."),
    "users": ("users", "Manage the appliance's users and their roles."),
    "worker": ("jobs", "Run the worker daemon: claim queued jobs and run each in its own process group."),
}


class LazyGroup(ApplianceGroup):
    """The top-level group: a command's module is imported when the command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(TABLE)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = TABLE.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__name__}.{entry[0]}")
        for command in getattr(module, "COMMANDS", ()):
            if command.name == cmd_name:
                return command
        raise LookupError(f"{module.__name__} has no command {cmd_name!r}")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, TABLE[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (default: APPLIANCE_HOME, else the config's 'home', else /var/lib/appliance).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: APPLIANCE_CONFIG, else /etc/appliance/appliance.yaml).",
)
@click.version_option(__version__, prog_name="appliance")
@click.pass_context
def main(ctx: click.Context, home: str | None, config_file: str | None) -> None:
    """The appliance: train, version, serve, monitor and audit models on one server, offline."""
    ctx.obj = Env(home_option=home, config_option=config_file)


def all_commands() -> dict[str, click.Command]:
    """Every top-level command, loaded (for tests and documentation checks)."""
    ctx = click.Context(main)
    return {name: cmd for name in main.list_commands(ctx) if (cmd := main.get_command(ctx, name))}

