"""Prompts: the prompt registry's prompts, versions and alias history, the diff of two
versions, each prompt version's use in the request log, and promotion and rollback of
``production`` through ``appliance.prompts`` with the signed-in user's own principal.

As for models, the console adds no rule of its own: the gates, who may promote, force
(an admin, with a reason) or roll back are the prompt promotion service's, so the pages,
the API and ``appliance prompts promote|rollback`` agree. A refusal (a failed gate, a
version that is already production, nothing to roll back to) is shown on the prompt's
page with its status, never as a server error.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from appliance import prompts, registry
from appliance.console import web
from appliance.console.apidoc import api
from appliance.console.security import can, requires
from appliance.console.views.evals import prompt_evaluation
from appliance.console.views.promotion import principal
from appliance.errors import ApplianceError, BadInput, NotFound
from appliance.monitoring.llm_usage import prompt_usage
from appliance.promotion.prompt_gates import promote_prompt
from appliance.prompts import promotion as prompt_promotion

bp = Blueprint("prompts", __name__)
READ = "prompts.read"
EVALS = "evals.read"  # the evaluation runs and gates on a prompt's pages
PROMOTE = "prompts.promote"
ROLLBACK = "prompts.rollback"
TRUE = frozenset({"1", "true", "on", "yes"})
USAGE_HOURS = 24
HISTORY_ROWS = 100
PLACEHOLDER = re.compile(r"(\{\{.*?\}\})", re.S)

PROMOTE_BODY = {"type": "object", "properties": {
    "reason": {"type": "string"}, "force": {"type": "boolean"}}}
REASON_BODY = {"type": "object", "properties": {"reason": {"type": "string"}}}


# --- what the pages and the API read -----------------------------------------------------


def model_names() -> set[str]:
    """The registered models, so that a prompt's model links only where there is a page."""
    return {m["name"] for m in registry.list_models(web.get_db())}


def usage_since() -> float:
    return time.time() - USAGE_HOURS * 3600


def usage_of(refs: list[str]) -> dict[str, dict[str, Any]]:
    """The last day's requests of each prompt version in ``refs``, by ref."""
    rows = prompt_usage(web.get_monitoring_db(), since=usage_since(), refs=refs)
    return {r["ref"]: r for r in rows}


def last_changes() -> dict[str, str]:
    """When each prompt last changed: its newest version or alias move, by name."""
    return {name: at for name, at in web.get_db().execute(
        "SELECT p.name, MAX(COALESCE((SELECT MAX(created_at) FROM prompt_versions"
        " WHERE prompt_id = p.id), ''), COALESCE((SELECT MAX(at) FROM prompt_alias_history"
        " WHERE prompt_id = p.id), ''), p.created_at) FROM prompts p")}


def listing() -> dict[str, Any]:
    db = web.get_db()
    rows = prompts.list_prompts(db)
    changed = last_changes()
    refs = [f"{r['name']}@{v}" for r in rows for v in range(1, (r["latest"] or 0) + 1)]
    usage = usage_of(refs)
    for r in rows:
        r["updated_at"] = changed.get(r["name"]) or r["created_at"]
    return {"prompts": rows, "usage": list(usage.values()), "usage_hours": USAGE_HOURS}


def prompt_detail(name: str) -> dict[str, Any]:
    db = web.get_db()
    versions = prompts.list_versions(db, name)  # NotFound for an unknown prompt
    aliases = {a: v.version for v in versions for a in v.aliases}
    return {
        "name": name,
        "versions": versions,
        "aliases": dict(sorted(aliases.items())),
        "history": list(reversed(prompts.alias_history(db, name)))[:HISTORY_ROWS],
        "usage": usage_of([v.ref for v in versions]),
        "usage_hours": USAGE_HOURS,
    }


def version_of(name: str, version: int) -> prompts.PromptVersion:
    return prompts.resolve(web.get_db(), f"{name}@{version}")


def _version_arg(name: str) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise BadInput(f"query parameter '{name}' must be a version number, not {raw!r}")
    return int(raw)


def diff_lines(text: str) -> list[tuple[str, str]]:
    """(kind, line) of a unified diff, kind one of file, hunk, add, del, same."""
    out = []
    for line in text.splitlines():
        if line.startswith(("---", "+++")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append((kind, line))
    return out


def default_pair(detail: dict[str, Any]) -> tuple[int | None, int | None]:
    """Production against the latest version, or the two latest when production is the
    latest (or unset); nothing to compare with one version."""
    numbers = [v.version for v in detail["versions"]]
    if len(numbers) < 2:
        return None, None
    latest, production = numbers[0], detail["aliases"].get(prompts.PRODUCTION)
    if production is not None and production != latest:
        return production, latest
    return numbers[1], latest


def version_diff(name: str, detail: dict[str, Any]) -> dict[str, Any]:
    """The diff ``?a=&b=`` asks for (or the default pair), or the error that stops it."""
    out: dict[str, Any] = {"a": None, "b": None, "lines": [], "error": "", "status": 200}
    try:
        a, b = _version_arg("a"), _version_arg("b")
        if a is None or b is None:
            da, db_ = default_pair(detail)
            a, b = (da if a is None else a), (db_ if b is None else b)
        out["a"], out["b"] = a, b
        if a is not None and b is not None:
            out["lines"] = diff_lines(prompts.diff(web.get_db(), f"{name}@{a}", f"{name}@{b}"))
    except (BadInput, NotFound) as exc:
        out["error"], out["status"] = exc.message, exc.status
    return out


@bp.app_template_filter("placeholders")
def segments(text: str) -> list[tuple[str, bool]]:
    """A message's text cut into (text, is_placeholder) pieces, for highlighting."""
    return [(piece, bool(PLACEHOLDER.fullmatch(piece)))
            for piece in PLACEHOLDER.split(text) if piece]


@bp.app_template_filter("param_text")
def param_text(value: Any) -> str:
    """A parameter for a person: numbers as the console writes them, strings and lists as
    JSON (so a stop sequence of a newline reads ``"\\n"``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return web.num(value)
    return json.dumps(value, ensure_ascii=False)


# --- promotion ---------------------------------------------------------------------------


def do_promote(name: str, version: int) -> prompts.PromptPromotion:
    """Through the gates of the prompt's policy, as on the command line."""
    return promote_prompt(web.get_db(), f"{name}@{version}", principal(),
                          force=web.form_field("force", required=False).lower() in TRUE,
                          reason=web.form_field("reason", required=False))


def do_rollback(name: str) -> prompts.PromptAliasMove:
    return prompts.rollback(web.get_db(), name, principal(),
                            reason=web.form_field("reason", required=False))


def _prompt_page(name: str, *, status: int = 200, message: str = "",
                 gates: list[Any] | None = None, form: dict[str, str] | None = None
                 ) -> tuple[str, int]:
    detail = prompt_detail(name)
    diff = version_diff(name, detail)
    production = detail["aliases"].get(prompts.PRODUCTION)
    done = ""  # after a redirect: said only when it is what production now is
    for key, verb in (("promoted", "is now production"), ("rolled_back", "is production again")):
        if production is not None and request.args.get(key) == f"{name}@{production}":
            done = f"{name}@{production} {verb}."
    page = render_template("prompt.html", **detail, diff=diff, message=message, done=done,
                           gates=gates or [], form=form or {}, production=production,
                           models=model_names(),
                           evaluation=prompt_evaluation(name) if can(EVALS) else None)
    return page, status if status != 200 else diff["status"]


# --- pages -------------------------------------------------------------------------------


@bp.get("/prompts")
@requires(READ)
def index() -> str:
    return render_template("prompts.html", **listing(), models=model_names())


@bp.get("/prompts/<name>")
@requires(READ)
def prompt_page(name: str) -> tuple[str, int]:
    """The prompt's versions, aliases and their history, and the diff ``?a=&b=``."""
    return _prompt_page(name)


@bp.get("/prompts/<name>/<int:version>")
@requires(READ)
def version_page(name: str, version: int) -> str:
    pv = version_of(name, version)
    usage = usage_of([pv.ref]).get(pv.ref)
    return render_template("prompt_version.html", v=pv, spec=pv.spec, usage=usage,
                           usage_hours=USAGE_HOURS, models=model_names(),
                           evaluation=prompt_evaluation(name, pv) if can(EVALS) else None,
                           schema=None if pv.spec.response_schema is None else json.dumps(
                               pv.spec.response_schema, indent=2, ensure_ascii=False))


@bp.post("/prompts/<name>/promote")
@requires(PROMOTE)
def promote_form(name: str) -> Response | tuple[str, int]:
    """Make the form's ``version`` production; a refusal shows on the prompt's page."""
    prompts.list_versions(web.get_db(), name)  # an unknown prompt is a plain 404
    form = {"version": web.form_field("version", required=False),
            "reason": web.form_field("reason", required=False)}
    try:
        if not form["version"].isdigit():
            raise BadInput("choose the version to promote")
        done = do_promote(name, int(form["version"]))
    except prompt_promotion.PromptPromotionRefused as exc:  # a failed gate: 409, as for models
        return _prompt_page(name, status=409, message=exc.message, gates=exc.results,
                            form=form)
    except ApplianceError as exc:
        return _prompt_page(name, status=exc.status, message=exc.message, form=form)
    return redirect(url_for("prompts.prompt_page", name=name, promoted=done.ref), 303)


@bp.post("/prompts/<name>/rollback")
@requires(ROLLBACK)
def rollback_form(name: str) -> Response | tuple[str, int]:
    """Put back the production version the last production move replaced."""
    prompts.list_versions(web.get_db(), name)
    try:
        move = do_rollback(name)
    except ApplianceError as exc:
        return _prompt_page(name, status=exc.status, message=exc.message,
                            form={"reason": web.form_field("reason", required=False)})
    return redirect(url_for("prompts.prompt_page", name=name,
                            rolled_back=f"{name}@{move.version}"), 303)


# --- API ---------------------------------------------------------------------------------


@bp.get("/api/prompts")
@requires(READ)
@api(returns="{prompts: [{name, versions, latest, model, aliases, updated_at, ...}], "
             "usage: [{ref, prompt, version, requests, errors, ...}], usage_hours}")
def api_prompts() -> Response:
    """Every prompt with its versions count, aliases, model and last change, and each
    prompt version's requests of the last 24 hours."""
    return jsonify(listing())


@bp.get("/api/prompts/<name>")
@requires(READ)
@api(returns="{name, versions: [...], aliases, history, usage: {ref: {...}}, usage_hours}")
def api_prompt(name: str) -> Response:
    """One prompt: its versions (newest first), aliases, alias moves (newest first) and
    the last 24 hours' requests per version."""
    detail = prompt_detail(name)
    detail["versions"] = [v.as_dict() for v in detail["versions"]]
    return jsonify(detail)


@bp.get("/api/prompts/<name>/versions/<int:version>")
@requires(READ)
@api(returns="{version: {ref, digest, model, messages, variables, parameters, ...}, "
             "canonical_yaml, usage}")
def api_version(name: str, version: int) -> Response:
    """One prompt version: its content, canonical YAML and last 24 hours' requests."""
    pv = version_of(name, version)
    return jsonify({"version": pv.as_dict(), "canonical_yaml": pv.spec.canonical_yaml(),
                    "usage": usage_of([pv.ref]).get(pv.ref), "usage_hours": USAGE_HOURS})


@bp.post("/api/prompts/<name>/versions/<int:version>/promote")
@requires(PROMOTE)
@api(body=PROMOTE_BODY, returns="{ref, forced, gates, move}; 409 {error, gates} when a "
                                "gate failed")
def api_promote(name: str, version: int) -> Response:
    """Make a prompt version production (gates; force: admin, with a reason)."""
    try:
        done = do_promote(name, version)
    except prompt_promotion.PromptPromotionRefused as exc:
        response = jsonify({"error": exc.message, "gates": [g.as_dict() for g in exc.results]})
        response.status_code = 409
        return response
    return jsonify(done.as_dict())


@bp.post("/api/prompts/<name>/rollback")
@requires(ROLLBACK)
@api(body=REASON_BODY, returns="the alias move {name, alias, version, previous, at, actor}")
def api_rollback(name: str) -> Response:
    """Put back the production version the last production move replaced."""
    return jsonify(do_rollback(name).as_dict())
