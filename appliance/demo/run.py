"""``appliance demo``: the whole loop, on this machine, in a few minutes.

1. generate loan applications and register them as a dataset;
2. train a model through the job queue (export, checker, parity) and promote it through
   the gates;
3. serve it and send traffic with an Open Inference Protocol client;
4. shift the incoming data (data drift), then the relation between features and label
   (concept drift), feeding delayed labels;
5. detect both, name the drifted features, raise alerts, retrain on recent data;
6. roll the retrained version out through shadow and canary to production, under traffic;
7. profile the production version as serving loads it, and size serving to the traffic
   the demo sent: a capacity report with its replay and recommendation;
8. serve a small language model built on this machine and ask it questions through
   OpenAI's API, with tokens, latency and cost per request (``demo/llm.py``);
9. a prompt for it: version 1 in production, version 2 scored on an evaluation set and
   promoted through the prompt's gates, an injection refused by the guardrails, a
   rollback, and usage per prompt version;
10. verify the audit trail.

Every step checks what it claims and raises ``DemoFailed`` naming itself when it can not.
The four services run as child processes (as ``appliance up`` runs them) against the
demo's data directory; the demo itself acts as a client and an operator would.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from appliance.audit import service as audit_service
from appliance.auth import Principal, Role
from appliance.auth.users import add_user
from appliance.capacity import report as capacity_report
from appliance.capacity import store as capacity_store
from appliance.config import Config, load_config
from appliance.datasets import add_dataset
from appliance.demo import data as loans
from appliance.demo import llm as demo_llm
from appliance.demo.traffic import Client, Outcome, model_inputs, send
from appliance.errors import ApplianceError, OperationFailed
from appliance.jobs import KINDS
from appliance.jobs.drift import check_model
from appliance.monitoring import Window, add_feedback_records, list_alerts
from appliance.monitoring import set_policy as set_retraining_policy
from appliance.promotion import advance_rollouts, promote
from appliance.promotion.policy import set_policy as set_promotion_policy
from appliance.queue.jobs import JobSpec, get_job, submit
from appliance.queue.states import JobState
from appliance.registry import resolve
from appliance.storage.home import Home, init_home
from appliance.system.supervisor import SERVICES, Supervisor

Say = Callable[[str], None]
MODEL = "loans"
HOST = "127.0.0.1"

PROMOTION_POLICY = """\
# The demo's promotion policy for 'loans': the default gates (accuracy no worse than
# production on the candidate's held-out data, latency, signature, parity, data quality)
# and a rollout short enough to watch. Shadow agreement is low on purpose: the retrained
# model is meant to disagree with a model the world has left behind; labelled quality
# decides.
rollout:
  shadow: {min_requests: 120, min_agreement: 0.5}
  canary: {weight: 0.3, min_requests: 60}
  margins: {error_rate: 0.01, p99_latency_ratio: 5.0, quality: 0.02}
"""

RETRAINING_POLICY = """\
# Retrain 'loans' when its relation to default changes: on the labelled production data
# since the drift began (the old relation no longer holds), and roll the candidate out
# through shadow without waiting for a person.
enabled: true
triggers: [concept_drift, performance]
production_since: alert
include_original: false
approval: none
promote_to: shadow
cooldown_minutes: 60
"""


class DemoFailed(OperationFailed):
    """A step did not do what it claims; the message names the step and why."""


@dataclass(frozen=True)
class DemoSettings:
    quick: bool = False
    seed: int = 7

    @property
    def train_rows(self) -> int:
        return 3000 if self.quick else 5000

    @property
    def phase_requests(self) -> int:
        return 500 if self.quick else 1000

    @property
    def epochs(self) -> int:
        return 8 if self.quick else 12


@dataclass
class DemoSummary:
    home: Path
    console_url: str
    serving_url: str
    admin_user: str
    admin_password: str
    versions: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    live_accuracy: dict[str, float] = field(default_factory=dict)
    drifted_features: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    rollout: list[str] = field(default_factory=list)
    requests_sent: int = 0
    requests_failed: int = 0
    audit_entries: int = 0
    audit_checkpoints: int = 0
    seconds: float = 0.0
    llm: demo_llm.LlmSummary | None = None
    capacity: str = ""  # the capacity report's verdict for the served model
    prompts: demo_llm.PromptSummary | None = None
    running: Supervisor | None = None  # the services, when the demo leaves them running


class Steps:
    """Numbered steps with progress lines; a failure names its step."""

    def __init__(self, say: Say, total: int = 7) -> None:
        self.say = say
        self.total = total
        self.n = 0
        self.title = ""

    def start(self, title: str) -> None:
        self.n += 1
        self.title = title
        self.say(f"[{self.n}/{self.total}] {title}")

    def info(self, text: str) -> None:
        self.say(f"      {text}")

    def fail(self, why: str) -> DemoFailed:
        return DemoFailed(f"step {self.n} ({self.title}) failed: {why}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def write_demo_config(home: Path, serving_port: int, console_port: int) -> Path:
    """Quick polling, ports of the demo's own; the request log's default keeps every
    request of the demo (serving.log_rows_per_second), so every label joins."""
    path = home / "demo.yaml"
    text = yaml.safe_dump({
        "serving": {"host": HOST, "port": serving_port,
                    "poll_interval_s": 0.25},
        "console": {"host": HOST, "port": console_port, "workers": 1},
        "worker": {"poll_s": 0.2},
        "monitoring": {"min_rows": 100, "min_labels": 100},
        # An example price, so that the demo shows a cost per request.
        "llm": {"cost_per_gpu_hour": 2.5, "currency": "EUR"},
    }, sort_keys=True)
    path.write_text("# Written by 'appliance demo'.\n" + text)
    return path


class Demo:
    def __init__(self, home: Home, config_path: Path, settings: DemoSettings, say: Say) -> None:
        self.home = home
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.settings = settings
        self.steps = Steps(say, total=10)
        self.say = say
        user = _os_user()
        self.actor = f"local:{user}"
        self.principal = Principal(name=self.actor, role=Role.ADMIN, via="local")
        self.serving_port = int(self.config["serving.port"])
        self.traffic = Outcome()
        self.supervisor: Supervisor | None = None

    # -- helpers ------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str,
                 interval: float = 0.25) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_services()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise self.steps.fail(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def answers(self, path: str) -> bool:
        """Whether the inference server answers GET ``path`` with 200."""
        client = Client(HOST, self.serving_port, timeout=2)
        try:
            status, _ = client.request("GET", path)
            return status == 200
        except OSError:
            return False
        finally:
            client.close()

    def check_services(self) -> None:
        if self.supervisor is None:
            return
        dead = self.supervisor.exited()
        if dead:
            raise self.steps.fail(f"the {dead[0].name} service exited; its log ends:\n"
                                  + self.supervisor.tail(dead[0]))

    def run_job(self, spec: JobSpec, what: str, timeout: float) -> dict[str, Any]:
        with self.home.db() as db:
            job_id = submit(db, spec, self.config, kinds=KINDS, actor=self.actor)
            self.steps.info(f"job {job_id} ({spec.kind}) queued")
            last = ""

            def finished() -> bool:
                nonlocal last
                job = get_job(db, job_id)
                note = _progress_note(job.progress)
                if note and note != last:
                    self.steps.info(f"job {job_id}: {note}")
                    last = note
                return job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

            self.wait_for(finished, timeout, what, interval=0.3)
            job = get_job(db, job_id)
        if job.state != JobState.SUCCEEDED:
            raise self.steps.fail(f"job {job_id} ({spec.kind}) {job.state.value}: {job.error}")
        return dict(job.result or {})

    def send(self, regime: str, n: int, seed: int,
             labels: bool = True) -> tuple[Outcome, dict[str, np.ndarray], list[str]]:
        columns = loans.generate(n, regime, seed=seed)
        rows = loans.rows(columns, 0, n)
        ids = [f"{regime}-{uuid.uuid4().hex[:12]}" for _ in range(n)]
        inputs = model_inputs(HOST, self.serving_port, MODEL)
        outcome = send(HOST, self.serving_port, MODEL, rows, ids, inputs, threads=4)
        self.traffic.merge(outcome)
        if outcome.failed:
            raise self.steps.fail(f"{outcome.failed} of {outcome.sent} requests failed, e.g. "
                                  f"{outcome.errors[:2]}")
        if labels:
            self.feedback(ids, columns)
        return outcome, columns, ids

    def live_accuracy(self, outcome: Outcome, ids: list[str],
                      columns: dict[str, np.ndarray], ref: str) -> float:
        """Accuracy of the served answers against the labels that came back later."""
        with self.home.db() as db:
            classes = [str(c) for c in resolve(db, ref).signature.get("classes", [])]
        truth = {rid: str(v) for rid, v in zip(ids, columns[loans.TARGET], strict=True)}
        right = [classes[k] == _label_text(truth[rid], classes)
                 for rid, k in outcome.predictions.items() if 0 <= k < len(classes)]
        if not right:
            raise self.steps.fail("no answers carried a predicted label")
        return float(np.mean(right))

    def wait_logged(self, ids: list[str]) -> None:
        """The serving daemon writes its request log in the background: wait until it has
        every answered request, as labels can only join predictions that were logged."""
        with self.home.monitoring_db() as mon:
            def logged() -> bool:
                n = 0
                for k in range(0, len(ids), 500):
                    chunk = ids[k:k + 500]
                    marks = ",".join("?" * len(chunk))
                    n += mon.execute(f"SELECT COUNT(DISTINCT request_id) FROM requests"
                                     f" WHERE request_id IN ({marks})", chunk).fetchone()[0]
                return n >= len(ids)

            self.wait_for(logged, 30, "the request log to record the answered requests")

    def feedback(self, ids: list[str], columns: dict[str, np.ndarray]) -> None:
        self.wait_logged(ids)
        truth = [str(v) for v in columns[loans.TARGET]]
        records = [{"request_id": rid, "label": label} for rid, label in zip(ids, truth, strict=True)]
        result = add_feedback_records(self.home, MODEL, records, actor=self.actor)
        if result.stored < len(records) * 0.95:
            raise self.steps.fail(f"only {result.stored} of {len(records)} labels joined a "
                                  "served prediction")

    # -- the steps ----------------------------------------------------------------------

    def start_services(self, summary: DemoSummary) -> None:
        self.supervisor = Supervisor(home=self.home.root, log_dir=self.home.root / "logs",
                                     config_file=str(self.config_path))
        self.supervisor.start(SERVICES)
        self.wait_for(lambda: self.answers("/v2/health/live"), 60,
                      "the inference server to answer")
        self.say(f"      services up: serving {summary.serving_url}, console "
                 f"{summary.console_url} (logs in {self.home.root / 'logs'})")

    def step_data(self, summary: DemoSummary) -> str:
        self.steps.start("generate loan applications and register them")
        columns = loans.generate(self.settings.train_rows, "baseline", seed=self.settings.seed)
        path = loans.write_csv(columns, self.home.root / "loans-baseline.csv")
        with self.home.db() as db:
            version, _new = add_dataset(db, self.home.blobs, "loans", path, target=loans.TARGET,
                                        actor=self.actor)
        ref = f"{version.name}@{version.version}"
        self.steps.info(f"{ref}: {self.settings.train_rows} rows, {len(loans.FEATURES)} features "
                        f"({len(loans.NUMERIC)} numeric, {len(loans.CATEGORICAL)} categorical), "
                        f"default rate {np.mean(columns[loans.TARGET] == 'yes'):.1%}")
        return ref

    def step_train(self, summary: DemoSummary, dataset: str) -> None:
        self.steps.start("train through the job queue, check, and promote through the gates")
        recipe = {
            "name": MODEL, "dataset": dataset, "target": loans.TARGET,
            "model": {"template": "mlp_classifier",
                      "params": {"hidden": [32], "epochs": self.settings.epochs,
                                 "batch_size": 64, "lr": 0.005, "weight_decay": 0.0001}},
            "seed": self.settings.seed,
        }
        result = self.run_job(JobSpec(kind="train", params={"recipe": recipe}),
                              "the training job", 240)
        version = str(result.get("model_version") or "")
        if not version:
            raise self.steps.fail(f"the training job returned no model version: {result}")
        with self.home.db() as db:
            set_promotion_policy(db, MODEL, PROMOTION_POLICY, actor=self.actor)
            set_retraining_policy(db, MODEL, RETRAINING_POLICY, actor=self.actor)
        outcome = promote(self.home, version, self.principal, to="production", config=self.config)
        for gate in outcome.report.gates:
            value = f"{gate.value:.4g}" if isinstance(gate.value, float) else gate.value
            self.steps.info(f"gate {gate.gate:<28} {'pass' if gate.passed else 'FAIL'}  "
                            f"{value} (threshold {gate.threshold})")
        summary.versions.append(version)
        summary.metrics[version] = dict(result.get("metrics", {}).get("test", {}))
        self.steps.info(f"{version} is in production; test accuracy "
                        f"{summary.metrics[version].get('accuracy', float('nan')):.3f}")

    def step_serve(self, summary: DemoSummary) -> None:
        self.steps.start("serve it and send traffic (Open Inference Protocol)")
        self.wait_for(lambda: self.answers(f"/v2/models/{MODEL}/ready"), 30,
                      f"the server to load {MODEL}")
        t0 = time.perf_counter()
        outcome, _, _ = self.send("baseline", self.settings.phase_requests, self.settings.seed + 1)
        rate = outcome.ok / max(1e-9, time.perf_counter() - t0)
        self.steps.info(f"{outcome.ok} requests answered ({rate:.0f}/s from 4 connections), "
                        f"labels fed back for each")

    def step_shift(self, summary: DemoSummary) -> tuple[float, float]:
        self.steps.start("shift the data, then the relation between features and default")
        t_data = time.time()
        outcome, _, _ = self.send("data_drift", self.settings.phase_requests,
                                  self.settings.seed + 2)
        self.steps.info(f"data drift: {outcome.ok} applications from a poorer, broker-heavy "
                        "population")
        t_concept = time.time()
        outcome, columns, ids = self.send("concept_drift", self.settings.phase_requests,
                                          self.settings.seed + 3)
        summary.live_accuracy[summary.versions[0]] = self.live_accuracy(
            outcome, ids, columns, summary.versions[0])
        self.steps.info(f"concept drift: {outcome.ok} applications where debt-to-income and "
                        "the broker channel now matter far more; delayed labels fed back")
        return t_data, t_concept

    def step_detect(self, summary: DemoSummary, t_data: float, t_concept: float) -> None:
        self.steps.start("detect drift, raise alerts, retrain on recent data")
        # The concept window first: the performance alert it raises queues the retrain job,
        # on the labelled data since that window began (production_since: alert). The data
        # drift window also falls short of the test accuracy; checked second, it only
        # confirms the alert.
        concept_check = check_model(self.home, MODEL, window=Window(start=t_concept,
                                                                    end=time.time()),
                                    config=self.config, actor=self.actor)
        data_check = check_model(self.home, MODEL, window=Window(start=t_data, end=t_concept),
                                 config=self.config, actor=self.actor)
        drift = data_check.drift
        if drift is None or not drift.dataset_drift:
            raise self.steps.fail("the data drift window was not flagged as drifted")
        summary.drifted_features = sorted(c.name for c in drift.columns
                                          if c.drifted and c.name in loans.FEATURES)
        self.steps.info(f"data drift in {len(summary.drifted_features)} of "
                        f"{len(loans.FEATURES)} features: {', '.join(summary.drifted_features)}")
        perf = concept_check.performance or {}
        if not concept_check.concept_drift and not any(
                b.kind in ("performance", "concept_drift") for b in concept_check.breaches):
            raise self.steps.fail(f"concept drift was not detected: {perf}")
        acc = perf.get("metrics", {}).get("accuracy")
        if acc is not None:
            self.steps.info(f"concept drift: live accuracy fell to {acc:.3f}")
        with self.home.db() as db:
            alerts = list_alerts(db, model=MODEL)
        summary.alerts = [f"{a.kind}: {a.message}" for a in alerts]
        for text in summary.alerts:
            self.steps.info(f"alert {text}")
        jobs = concept_check.retrain_jobs + data_check.retrain_jobs
        if not jobs:
            raise self.steps.fail("no retraining job was queued by the retraining policy")
        self.steps.info(f"the retraining policy queued job {jobs[0]}")
        with self.home.db() as db:
            self.wait_for(lambda: get_job(db, jobs[0]).state in (
                JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED), 300, "retraining")
            job = get_job(db, jobs[0])
        if job.state != JobState.SUCCEEDED:
            raise self.steps.fail(f"retraining job {jobs[0]} {job.state.value}: {job.error}")
        result = dict(job.result or {})
        candidate = str(result.get("candidate"))
        summary.versions.append(candidate)
        summary.metrics[candidate] = dict(result.get("metrics", {}).get("test", {}))
        promo = result.get("promotion") or {}
        if promo.get("state") != "promoted":
            raise self.steps.fail(f"the retrained {candidate} was not promoted: "
                                  f"{promo.get('message', promo)}")
        self.steps.info(f"retrained {candidate} on {result.get('dataset')} "
                        f"(+{result.get('production_rows')} labelled production rows); "
                        f"promotion: {promo.get('state', promo)}")

    def step_rollout(self, summary: DemoSummary) -> None:
        self.steps.start("roll the new version out: shadow, canary, production")
        candidate = summary.versions[-1]
        seed = self.settings.seed + 10
        deadline = time.monotonic() + 120
        while True:
            self.send("concept_drift", 150, seed)
            seed += 1
            for step in advance_rollouts(self.home, name=MODEL, actor="system:rollout"):
                if step.decision != "wait":
                    line = f"{step.state_before} -> {step.state_after} ({step.decision})"
                    summary.rollout.append(line)
                    self.steps.info(f"rollout {line}: {'; '.join(step.reasons)}")
                    if step.decision == "rollback":
                        raise self.steps.fail(f"the rollout of {candidate} was rolled back: "
                                              f"{'; '.join(step.reasons)}")
            with self.home.db() as db:
                production = resolve(db, f"{MODEL}@production").ref
            if production == candidate:
                break
            if time.monotonic() > deadline:
                raise self.steps.fail(f"{candidate} did not reach production in time")
        # The server notices the alias move on its next poll and swaps the new version in
        # beside the old one; once it answers from the new version, every answer must.
        new_version = candidate.split("@")[1]
        self.wait_for(lambda: self.send("concept_drift", 8, seed + 100, labels=False)[0]
                      .versions.get(new_version, 0) == 8, 10, "the server to switch versions")
        outcome, columns, ids = self.send("concept_drift", self.settings.phase_requests,
                                          seed + 1)
        summary.live_accuracy[candidate] = self.live_accuracy(outcome, ids, columns, candidate)
        before = summary.live_accuracy[summary.versions[0]]
        if summary.live_accuracy[candidate] <= before:
            raise self.steps.fail(f"{candidate} is no better on the new data than "
                                  f"{summary.versions[0]} ({summary.live_accuracy[candidate]:.3f}"
                                  f" vs {before:.3f})")
        self.steps.info(f"accuracy on the drifted traffic: {summary.versions[0]} {before:.3f}, "
                        f"{candidate} {summary.live_accuracy[candidate]:.3f}")
        if outcome.versions.get(new_version, 0) != outcome.ok:
            raise self.steps.fail(f"after the switch, answers came from {outcome.versions}")
        self.steps.info(f"{candidate} is in production; {self.traffic.sent} requests so far, "
                        f"{self.traffic.failed} failed")

    def step_capacity(self, summary: DemoSummary, since: float) -> None:
        self.steps.start("size serving to the traffic: profile, replay, recommend")
        with self.home.db() as db:
            ref = resolve(db, f"{MODEL}@production").ref
        result = self.run_job(JobSpec(kind="capacity-profile", params={
            "model": ref, "batch_sizes": [1, 16], "concurrency": [1, 4], "window_s": 0.25,
            "max_windows": 8}), f"the capacity profile of {ref}", timeout=300)
        with self.home.db() as db:
            profile = capacity_store.get(db, int(result["profile_id"]))
        for point in profile["points"]:
            self.steps.info(f"batch {point['batch_size']:>2}, {point['concurrency']} in flight: "
                            f"{point['rows_per_s']:,.0f} rows/s, p95 "
                            f"{point['latency_us']['p95'] / 1000:.2f} ms")
        with self.home.db() as db, self.home.monitoring_db() as mon:
            report = capacity_report.build(mon, db, self.config, since=since, model=MODEL)
        (m,) = report["models"]
        if not m["enough"]:
            raise self.steps.fail("the capacity report had too little data: "
                                  + "; ".join(m["missing"]))
        demand, rec = m["demand"]["requests_per_s"], m["recommendation"]
        self.steps.info(f"{m['requests']} requests logged: peak {demand['peak']:g}/s, busy "
                        f"{m['utilisation']['peak']:.0%} of the busiest minute")
        self.steps.info(f"replayed: p95 {m['replay']['observed_p95_ms']} ms logged, "
                        f"{m['replay']['predicted_p95_ms_at_current_settings']} ms predicted; "
                        f"recommended max_batch_size {rec['max_batch_size']}, "
                        f"max_queue_delay_us {rec['max_queue_delay_us']}")
        summary.capacity = m["capacity"]["verdict"]
        self.steps.info(summary.capacity)

    def step_llm(self, summary: DemoSummary, build: demo_llm.ModelBuild) -> None:
        self.steps.start("serve a language model: OpenAI's API, tokens, latency and cost")
        port = int(summary.serving_url.rsplit(":", 1)[1].split("/")[0])
        try:
            summary.llm = demo_llm.run_step(self.home, build, self.principal, HOST, port,
                                            self.wait_for, self.steps.info)
        except OperationFailed as exc:
            raise self.steps.fail(str(exc)) from exc

    def step_prompts(self, summary: DemoSummary) -> None:
        self.steps.start("prompts: evaluated, gated, guarded, rolled back")
        port = int(summary.serving_url.rsplit(":", 1)[1].split("/")[0])
        try:
            summary.prompts = demo_llm.run_prompt_loop(
                self.home, self.principal, HOST, port, self.run_job, self.wait_for,
                self.steps.info)
        except OperationFailed as exc:
            raise self.steps.fail(str(exc)) from exc

    def step_audit(self, summary: DemoSummary) -> None:
        self.steps.start("verify the audit trail")
        with self.home.db() as db:
            audit_service.checkpoint(db)
            report = audit_service.verify(db)
        if not report.ok:
            raise self.steps.fail(f"audit verification failed at entry {report.first_bad_seq}: "
                                  f"{report.reason}")
        summary.audit_entries = report.size
        summary.audit_checkpoints = report.checkpoints
        self.steps.info(f"{report.size} entries and {report.checkpoints} signed checkpoints "
                        "verified")


def _label_text(label: str, classes: list[str]) -> str:
    """The generated label ('yes'/'no') as the model's classes spell it."""
    if set(classes) == {"false", "true"}:
        return {"yes": "true", "no": "false"}.get(label, label)
    return label


def _progress_note(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    message = progress.get("message") or ""
    fraction = progress.get("fraction")
    if fraction is not None:
        return f"{float(fraction):.0%} {message}".strip()
    return str(message)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "demo"


def prepare_home(root: Path) -> Home:
    """A fresh data directory for the demo; one left by an earlier demo is replaced."""
    import shutil

    marker = root / ".demo"
    if root.exists() and any(root.iterdir()):
        if not marker.exists():
            raise DemoFailed(f"{root} holds data that is not an earlier demo's; choose another "
                             "--home or remove it")
        shutil.rmtree(root)
    home = Home(root=root)
    init_home(home)
    marker.write_text("made by 'appliance demo'; the next demo replaces this directory\n")
    return home


def run_demo(root: Path, settings: DemoSettings, say: Say, *, keep: bool = False) -> DemoSummary:
    started = time.monotonic()
    home = prepare_home(root)
    serving_port, console_port = free_port(), free_port()
    config_path = write_demo_config(home.root, serving_port, console_port)
    demo = Demo(home, config_path, settings, say)
    audit_service.ensure_key(home, demo.actor)
    password = secrets.token_urlsafe(12)
    with home.db() as db:
        add_user(db, "admin", "admin", password, actor=demo.actor)
    summary = DemoSummary(home=home.root, console_url=f"http://{HOST}:{console_port}/",
                          serving_url=f"http://{HOST}:{serving_port}/v2",
                          admin_user="admin", admin_password=password)
    ok = False
    # Built while the tabular loop runs; served in step 8.
    build = demo_llm.ModelBuild(home.root / "demo-llm").start()
    try:
        demo.start_services(summary)
        dataset = demo.step_data(summary)
        demo.step_train(summary, dataset)
        demo.step_serve(summary)
        t_data, t_concept = demo.step_shift(summary)
        demo.step_detect(summary, t_data, t_concept)
        demo.step_rollout(summary)
        demo.step_capacity(summary, since=time.time() - (time.monotonic() - started))
        demo.step_llm(summary, build)
        demo.step_prompts(summary)
        demo.step_audit(summary)
        ok = True
    except ApplianceError as exc:
        if isinstance(exc, DemoFailed):
            raise
        raise demo.steps.fail(str(exc)) from exc
    finally:
        summary.requests_sent = demo.traffic.sent
        summary.requests_failed = demo.traffic.failed
        summary.seconds = time.monotonic() - started
        if demo.supervisor is not None:
            if keep and ok:
                summary.running = demo.supervisor
            else:
                demo.supervisor.stop()
    return summary
