"""An evaluation run: every case of a set asked of a target, answered, scored and stored.

The target's model version (and any judge model) is loaded as serving loads a language
model: its folder put back from blobs and checked against its manifest, then
onnxruntime-genai in a child process (``appliance.serving.llm.load_llm``), on the GPU
where one is usable. A version need not be promoted to be evaluated: evaluation is what
happens before promotion. Cases run one after another, greedy unless the run or the case
asks for a temperature; each answer's latency is measured from submission to the last
token, as a client would see it. Each case also goes through the guardrails the serving
daemon would run on it (``guard.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import BadInput, OperationFailed
from appliance.evals.cases import Case, check_params
from appliance.evals.guard import Screening, screen_case
from appliance.evals.results import save_run
from appliance.evals.scorers import Answer, Context, run_scorer
from appliance.evals.sets import EvalsetVersion, get_evalset_version, load_cases
from appliance.evals.targets import PromptTarget, Target, check_target, parse_target
from appliance.llm.runtime import ERROR, Generation, Sampling
from appliance.registry import resolve
from appliance.registry.versions import ModelVersion
from appliance.storage.db import Database
from appliance.storage.home import Home

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Plan:
    """A run checked before it is queued or started."""

    target: Target
    model: ModelVersion
    evalset: EvalsetVersion
    cases: list[Case]
    judge: str | None
    params: dict[str, Any]


def _llm(db: Database, ref: str, what: str) -> ModelVersion:
    from appliance.llm.folder import is_llm

    mv = resolve(db, ref)
    if not is_llm(mv.signature):
        raise BadInput(f"{what} {ref} is {mv.ref}, a tabular model; evaluation sets are for "
                       "language models")
    return mv


def plan_run(db: Database, blobs: Any, target: str, evalset: str, *,
             judge: str | None = None, params: dict[str, Any] | None = None) -> Plan:
    """Check everything a run needs: the target and its model, the set, the judge of
    every judge case, the parameters. ``BadInput`` or ``NotFound`` naming what is wrong."""
    parsed = parse_target(target, db)
    run_params = check_params(params or {}, "run parameters")
    if judge is not None:
        check_target(judge, prompts=False)
    model = _llm(db, parsed.model_ref(), "target")
    version = get_evalset_version(db, evalset)
    cases = load_cases(blobs, version)
    parsed.check(cases)
    judges = set()
    for case in cases:
        for e in case.expect:
            if e["scorer"] != "judge":
                continue
            if e["model"] is None and judge is None:
                raise BadInput(f"line {case.line} (case {case.id!r}) asks a judge and names no "
                               "model; give the run one (--judge NAME@VERSION)")
            judges.add(e["model"] or judge)
    for ref in sorted(j for j in judges if j is not None):
        _llm(db, ref, "judge")
    return Plan(parsed, model, version, cases, judge, run_params)


class _Done:
    """A sink that keeps the text in the child until the end, and says when it ended."""

    stream = False

    def __init__(self) -> None:
        self.event = threading.Event()

    def tokens(self, generation: Generation, text: str) -> None:
        pass

    def finished(self, generation: Generation) -> None:
        self.event.set()


class Models:
    """The language models one run loads (the target, its judges), closed together."""

    def __init__(self, home: Home, config: Config, cuda: bool | None = None) -> None:
        self.home = home
        self.config = config
        self._cuda = cuda
        self._loaded: dict[str, Any] = {}

    @property
    def cuda(self) -> bool:
        if self._cuda is None:
            from appliance.gpu.inventory import NvmlSource
            from appliance.onnxtools.providers import check_providers

            self._cuda = "CUDAExecutionProvider" in check_providers(NvmlSource().read()).usable
        return self._cuda

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def get(self, ref: str) -> Any:
        """The loaded model of ``ref`` (loaded on first use)."""
        from appliance.llm.folder import materialize
        from appliance.serving.llm import LlmSettings, load_llm

        if ref in self._loaded:
            return self._loaded[ref]
        with self.home.db() as db:
            mv = _llm(db, ref, "model")
        if mv.ref in self._loaded:  # the target judging itself, by another name
            self._loaded[ref] = self._loaded[mv.ref]
            return self._loaded[ref]
        manifest = self.home.blobs.read_bytes(mv.onnx_digest, verify=True)
        folder = materialize(self.home.blobs, manifest, self.home.llm_dir / mv.onnx_digest)
        settings = LlmSettings.from_config(self.config)
        loaded = load_llm(mv.name, mv.version, Path(folder), mv.signature, cuda=self.cuda,
                          settings=settings)
        self._loaded[ref] = self._loaded[mv.ref] = loaded
        return loaded

    def generate(self, ref: str, messages: list[dict[str, str]], params: dict[str, Any]
                 ) -> Answer:
        """One answer, greedy unless ``params`` gives a temperature."""
        model = self.get(ref)
        try:
            ids = model.runtime.encode(model.template.render(messages))
        except BadInput as exc:
            return Answer("", error=exc.message)
        room = model.context_length - len(ids)
        if room < 1:
            return Answer("", prompt_tokens=len(ids),
                          error=f"the prompt is {len(ids)} tokens; the model's context is "
                                f"{model.context_length} tokens")
        wanted = params.get("max_tokens") or self.config["llm.default_max_tokens"]
        sampling = Sampling(max_tokens=min(wanted, room),
                            temperature=float(params.get("temperature", 0.0)),
                            seed=params.get("seed"))
        sink = _Done()
        generation = Generation(ids, sampling, sink)
        started = time.perf_counter()
        model.runtime.submit(generation)
        if not sink.event.wait(self.config["llm.request_timeout_s"]):
            model.runtime.cancel(generation)
            sink.event.wait(5.0)
            return Answer(generation.text, prompt_tokens=len(ids),
                          completion_tokens=generation.completion_tokens,
                          latency_ms=(time.perf_counter() - started) * 1e3,
                          finish_reason="timeout",
                          error=f"no answer within llm.request_timeout_s "
                                f"({self.config['llm.request_timeout_s']:g} s)")
        latency = (time.perf_counter() - started) * 1e3
        error = (generation.error or "generation failed") \
            if generation.finish_reason == ERROR else None
        return Answer(generation.text, prompt_tokens=len(ids),
                      completion_tokens=generation.completion_tokens, latency_ms=latency,
                      finish_reason=generation.finish_reason, error=error)

    def close(self) -> None:
        for loaded in {id(m): m for m in self._loaded.values()}.values():
            loaded.runtime.close()
        self._loaded.clear()


def score_case(case: Case, messages: list[dict[str, str]], answer: Answer,
               ctx: Context) -> list[dict[str, Any]]:
    """Each expectation's score of one answer; an answer that never came scores 0."""
    out = []
    for expectation in case.expect:
        name = expectation["scorer"]
        if answer.error is not None:
            out.append({"scorer": name, "score": 0.0, "passed": False,
                        "reason": f"no answer: {answer.error}"})
            continue
        out.append(run_scorer(expectation, answer, ctx).as_dict(name))
    return out


def run_plan(models: Models, plan: Plan, progress: Progress,
             screening: Screening | None = None) -> list[dict[str, Any]]:
    """Ask, answer and score every case, and run the guardrails on it; one result per
    case, in the set's order."""
    results = []
    model_ref = plan.model.ref
    total = len(plan.cases)
    prompt = plan.target.prompt.name if isinstance(plan.target, PromptTarget) else None
    policy = screening.policy(plan.model.name, prompt) if screening is not None else None
    progress(0.0, f"loading {model_ref}")
    models.get(model_ref)

    def judge(ref: str, messages: list[dict[str, str]], max_tokens: int) -> Answer:
        return models.generate(ref, messages, {"max_tokens": max_tokens, "temperature": 0.0})

    passed = 0
    for i, case in enumerate(plan.cases):
        request = plan.target.request(case, plan.params)
        answer = models.generate(model_ref, request.messages, request.params)
        ctx = Context(messages=request.messages, judge=judge, judge_model=plan.judge)
        scores = score_case(case, request.messages, answer, ctx)
        verdict = screen_case(screening, policy, case, request.messages, answer, scores)
        ok = all(s["passed"] for s in scores)
        passed += ok
        results.append({"line": case.line, "case": case.id, "answer": answer.text,
                        "prompt_tokens": answer.prompt_tokens,
                        "completion_tokens": answer.completion_tokens,
                        "latency_ms": round(answer.latency_ms, 3),
                        "finish_reason": answer.finish_reason, "error": answer.error,
                        "scores": scores, "guardrail": verdict})
        progress((i + 1) / total, f"case {i + 1}/{total} ({case.id}): "
                                  f"{'passed' if ok else 'failed'}; {passed} passed so far")
    return results


def evaluate(home: Home, config: Config, target: str, evalset: str, *,
             judge: str | None = None, params: dict[str, Any] | None = None,
             actor: str, job_id: int | None = None, progress: Progress | None = None,
             cuda: bool | None = None) -> int:
    """Run ``evalset`` against ``target`` and store the run; its id."""
    with home.db() as db:
        plan = plan_run(db, home.blobs, target, evalset, judge=judge, params=params)
        screening = Screening.from_config(config, db, home.blobs)
    models = Models(home, config, cuda=cuda)
    started = time.perf_counter()
    try:
        results = run_plan(models, plan, progress or (lambda _f, _m: None), screening)
    finally:
        models.close()
    if not results:
        raise OperationFailed(f"{plan.evalset.ref} gave no results")
    run_params = {**plan.params, "judge": plan.judge}
    with home.db() as db:
        return save_run(db, evalset_version_id=plan.evalset.id, evalset_ref=plan.evalset.ref,
                        target=plan.target.text, model_version_id=plan.model.id,
                        model_ref=plan.model.ref, params=run_params, device=models.device,
                        duration_s=time.perf_counter() - started, results=results,
                        actor=actor, job_id=job_id)
