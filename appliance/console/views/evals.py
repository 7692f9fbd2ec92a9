"""Evaluations: evaluation sets and their cases, evaluation runs (the summary per scorer,
every case's answer, scores and reasons, the self-contained HTML report) and the comparison
of two runs, read from ``appliance.evals`` as ``appliance evals list|show|runs|report|
compare`` print them; and, for the prompt pages, a prompt's runs and what its policy's
gates say of a version now.

Answers are model output, and model output is untrusted: the pages escape them as every
template does, and the report (``appliance.evals.report``, which escapes every text itself)
is served as ``text/html`` under ``DOCUMENT_CSP``: its inline CSS and nothing else, no
script, no fetch, sandboxed.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, jsonify, render_template, request
from werkzeug.wrappers import Response

from appliance import prompts
from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import DOCUMENT_CSP, requires
from appliance.errors import ApplianceError, BadInput, NotFound
from appliance.evals import results, sets
from appliance.evals.report import render_html
from appliance.promotion import prompt_gates
from appliance.prompts import promotion as prompt_promotion

bp = Blueprint("evals", __name__)
READ = "evals.read"
PROMPT_TARGET = "prompts:/"
RUNS_SHOWN = 200  # on /evals; the API gives every run
CASES_SHOWN = 500  # of a set or a run on its page; the API and the report give every case
PROMPT_RUNS = 10  # on a prompt's pages
PROMPT_VERSIONS_GATED = 10  # versions whose gates the prompt page runs


# --- what the pages and the API read -----------------------------------------------------


def split_ref(ref: str) -> tuple[str, int | None]:
    """``NAME@3`` as (NAME, 3); a ref without a version number as (ref, None)."""
    name, _, version = ref.rpartition("@")
    return (name, int(version)) if name and version.isdigit() else (ref, None)


@bp.app_template_filter("eval_target")
def eval_target(run: dict[str, Any]) -> dict[str, Any]:
    """What a run evaluated, for a link: a prompt version (``prompts:/NAME@VERSION``) or a
    model version (the target as given, and the version it resolved to)."""
    target = run["target"]
    if target.startswith(PROMPT_TARGET):
        name, version = split_ref(target[len(PROMPT_TARGET):])
        return {"kind": "prompt", "name": name, "version": version, "text": target}
    name, version = split_ref(run["model"])
    return {"kind": "model", "name": name, "version": version, "text": target,
            "resolved": run["model"] if run["model"] != target else ""}


@bp.app_template_filter("expect_args")
def expect_args(expectation: dict[str, Any]) -> list[tuple[str, str]]:
    """A scorer's arguments as (name, text) pairs, strings, lists and objects as JSON; those
    left unset (``all`` beside ``any``, no extra ``markers``) are not shown."""
    return [(k, web.num(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
             else json.dumps(v, ensure_ascii=False, sort_keys=True))
            for k, v in expectation.items() if k != "scorer" and v not in (None, [], {})]


def case_failed(case: dict[str, Any]) -> bool:
    return bool(case["error"]) or not case["scores"] or not all(
        s["passed"] for s in case["scores"])


def set_listing() -> list[dict[str, Any]]:
    """Every set with its latest version's cases, scorers and who added it when."""
    db = web.get_db()
    out = []
    for row in sets.list_evalsets(db):
        latest = sets.get_evalset_version(db, row["name"]) if row["latest"] else None
        out.append({**row, "latest_version": None if latest is None else latest.as_dict()})
    return out


def set_versions(name: str) -> list[sets.EvalsetVersion]:
    """Every version of set ``name``, newest first (versions are numbered 1, 2, ...)."""
    db = web.get_db()
    latest = sets.get_evalset_version(db, name)  # NotFound for an unknown set
    return [latest] + [sets.get_evalset_version(db, f"{name}@{v}")
                       for v in range(latest.version - 1, 0, -1)]


def _version_arg(name: str) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(f"query parameter '{name}' must be a version number, not {raw!r}")
    return int(raw)


def set_detail(name: str) -> dict[str, Any]:
    """A version of a set (``?version=``, else the latest) with its cases."""
    versions = set_versions(name)
    wanted = _version_arg("version")
    chosen = versions[0] if wanted is None else next(
        (v for v in versions if v.version == wanted), None)
    if chosen is None:
        raise NotFound(f"evaluation set {name}@{wanted} does not exist; {name} has versions "
                       f"1 to {versions[0].version}")
    cases = sets.load_cases(web.home().blobs, chosen)
    return {"name": name, "version": chosen, "versions": versions,
            "cases": [c.as_dict() for c in cases]}


def run_listing(evalset: str | None) -> list[dict[str, Any]]:
    """Runs, newest first; of one set (by name) when given, which must exist."""
    db = web.get_db()
    if evalset:
        sets.get_evalset_version(db, evalset.split("@")[0])  # NotFound for an unknown set
    return results.list_runs(db, evalset.split("@")[0] if evalset else None)


def run_detail(run_id: int) -> dict[str, Any]:
    """A run with every case, each with what it asked (from the set's version) when the
    set still has the case."""
    db = web.get_db()
    run = results.get_run(db, run_id)
    asked: dict[str, dict[str, Any]] = {}
    try:
        version = sets.get_evalset_version(db, run["evalset"])
        asked = {c.id: c.as_dict() for c in sets.load_cases(web.home().blobs, version)}
    except ApplianceError:  # a set's bytes that can not be read: the answers still show
        asked = {}
    for case in run["cases"]:
        case["asked"] = asked.get(case["case"])
        case["failed"] = case_failed(case)
    return run


def _run_arg(name: str) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise BadInput(f"query parameter '{name}' must be a run number, not {raw!r}")
    return int(raw)


def comparison() -> dict[str, Any] | None:
    """``results.compare`` of ``?a=`` and ``?b=``; None when neither is given."""
    a, b = _run_arg("a"), _run_arg("b")
    if a is None and b is None:
        return None
    if a is None or b is None:
        raise BadInput("compare needs two runs: ?a=RUN&b=RUN")
    return results.compare(web.get_db(), a, b)


# --- for the prompt pages ----------------------------------------------------------------


def prompt_runs(name: str, version: int | None = None) -> list[dict[str, Any]]:
    """The newest evaluation runs of prompt ``name`` (of one version when given)."""
    prefix = f"{PROMPT_TARGET}{name}@"
    runs = [r for r in results.list_runs(web.get_db())
            if r["target"].startswith(prefix)
            and (version is None or r["target"] == f"{prefix}{version}")]
    return runs[:PROMPT_RUNS]


def _production(name: str) -> prompts.PromptVersion | None:
    try:
        return prompts.resolve(web.get_db(), f"{name}@{prompts.PRODUCTION}", latest=False)
    except NotFound:
        return None


def gate_check(name: str, versions: list[prompts.PromptVersion]) -> dict[str, Any]:
    """The prompt's policy and what each gate says of each version now: the gates
    ``prompts promote`` runs (those every prompt has, then the policy's), called directly.
    They read runs and write nothing, so nothing is promoted or audited."""
    db = web.get_db()
    out: dict[str, Any] = {"policy": prompt_gates.get_policy(db, name), "error": "",
                           "production": None, "versions": {}}
    production = _production(name)
    out["production"] = production.version if production else None
    try:
        gates = (*prompt_promotion.GATES, *prompt_gates.gates_for(db, name))
    except ApplianceError as exc:  # the policy's set can not be read
        out["error"] = exc.message
        return out
    for pv in versions:
        checked = [gate(db, pv, production) for gate in gates]
        out["versions"][pv.version] = {"gates": checked,
                                       "passed": all(g.passed for g in checked)}
    return out


def prompt_evaluation(name: str, version: prompts.PromptVersion | None = None
                      ) -> dict[str, Any]:
    """What the prompt pages show: the newest runs and the gates, of one version or of the
    prompt's newest versions."""
    if version is not None:
        gated = [version]
    else:
        gated = prompts.list_versions(web.get_db(), name)[:PROMPT_VERSIONS_GATED]
    return {"runs": prompt_runs(name, None if version is None else version.version),
            **gate_check(name, gated)}


# --- pages -------------------------------------------------------------------------------


@bp.get("/evals")
@requires(READ)
def index() -> str:
    chosen = request.args.get("set", "").strip()
    runs = run_listing(chosen or None)
    return render_template("evals.html", evalsets=set_listing(), runs=runs[:RUNS_SHOWN],
                           total_runs=len(runs), chosen=chosen)


@bp.get("/evals/sets/<name>")
@requires(READ)
def set_page(name: str) -> str:
    """A version of a set (``?version=``, else the latest): its cases and scorers."""
    detail = set_detail(name)
    runs = [r for r in results.list_runs(web.get_db(), name)
            if r["evalset"] == detail["version"].ref]
    return render_template("evalset.html", **detail, runs=runs[:PROMPT_RUNS],
                           shown=CASES_SHOWN)


@bp.get("/evals/runs/<int:run_id>")
@requires(READ)
def run_page(run_id: int) -> str:
    """A run's summary per scorer, tokens and latency, and every case (``?failed=1``: the
    failed ones)."""
    run = run_detail(run_id)
    only_failed = request.args.get("failed", "") in ("1", "true", "yes", "on")
    cases = [c for c in run["cases"] if c["failed"] or not only_failed]
    return render_template("eval_run.html", run=run, cases=cases[:CASES_SHOWN],
                           total=len(cases), only_failed=only_failed,
                           failed=sum(c["failed"] for c in run["cases"]),
                           scorers=list(run["summary"]["scorers"]))


@bp.get("/evals/runs/<int:run_id>/report")
@requires(READ)
def report(run_id: int) -> Response:
    """The run's self-contained HTML report, the page ``appliance evals report`` writes;
    ``?download=1`` saves it as a file."""
    page = render_html(results.get_run(web.get_db(), run_id))
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCUMENT_CSP
    how = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{how}; filename="eval-run-{run_id}.html"'
    return response


@bp.get("/evals/compare")
@requires(READ)
def compare_page() -> str:
    """Two runs side by side (``?a=&b=``); without them, a form to choose."""
    cmp = comparison()
    runs = results.list_runs(web.get_db())[:RUNS_SHOWN]
    # The form starts on the pair shown, else on the two newest runs (older as A).
    a = str(cmp["a"]["id"]) if cmp else str(runs[1]["id"]) if len(runs) > 1 else ""
    b = str(cmp["b"]["id"]) if cmp else str(runs[0]["id"]) if runs else ""
    return render_template("evals_compare.html", cmp=cmp, runs=runs, a=a, b=b)


# --- API ---------------------------------------------------------------------------------


@bp.get("/api/evals/sets")
@requires(READ)
@api(returns="{sets: [{name, versions, latest, latest_cases, latest_version, ...}]}")
def api_sets() -> Response:
    """Every evaluation set with its latest version."""
    return jsonify({"sets": set_listing()})


@bp.get("/api/evals/sets/<name>")
@requires(READ)
@api(returns="{name, version: {ref, digest, cases, scorers, ...}, versions, cases: [...]}")
def api_set(name: str) -> Response:
    """A version of a set (?version=, else the latest) with every case."""
    detail = set_detail(name)
    return jsonify({**detail, "version": detail["version"].as_dict(),
                    "versions": [v.as_dict() for v in detail["versions"]]})


@bp.get("/api/evals/runs")
@requires(READ)
@api(returns="{runs: [{id, evalset, target, model, job_id, params, device, duration_s, "
             "summary, created_at, created_by}]}")
def api_runs() -> Response:
    """Evaluation runs, newest first (?set=NAME for one set's), as ``appliance evals runs``."""
    return jsonify({"runs": run_listing(request.args.get("set", "").strip() or None)})


@bp.get("/api/evals/runs/<int:run_id>")
@requires(READ)
@api(returns="{id, evalset, target, model, summary, cases: [{case, answer, scores, ...}], ...}")
def api_run(run_id: int) -> Response:
    """One run with every case, as ``appliance evals report RUN --json``."""
    return jsonify(results.get_run(web.get_db(), run_id))


@bp.get("/api/evals/compare")
@requires(READ)
@api(returns="{a, b, scorers: {name: {a, b, delta, ...}}, better, worse, same, only_a, "
             "only_b}")
def api_compare() -> Response:
    """Two runs compared (?a=RUN&b=RUN), as ``appliance evals compare A B --json``."""
    cmp = comparison()
    if cmp is None:
        raise BadInput("compare needs two runs: ?a=RUN&b=RUN")
    return jsonify(cmp)
