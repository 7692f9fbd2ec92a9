"""The Evaluations pages: sets and runs, a set's cases, a run's summary and cases, its
HTML report, the comparison of two runs, the JSON routes, the runs and gates on the prompt
pages, and what unknown ids, bad input and an empty database get. The runs are made by
hand (``helpers.console.seed_evals``): no language model answers here."""

from __future__ import annotations

import html
import re
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from helpers.console import SCRIPT, client_with_session, make_app, seed_prompt

from appliance.auth import sessions, users
from appliance.auth.permissions import Principal, Role
from appliance.console.security import DOCUMENT_CSP
from appliance.evals.report import render_html
from appliance.evals.results import get_run
from appliance.promotion import prompt_gates
from appliance.storage.home import Home, init_home

LONG_FLOAT = re.compile(r"\d\.\d{5,}")
POLICY = "evalset: capitals\nmin_score: {contains: 0.75}\nmax_regression: 0.0\nmax_tokens: 16\n"


def text_of(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def visible(page: str) -> str:
    """The page without its tags' attributes (where exact values sit in titles)."""
    return re.sub(r"<[^>]*>", " ", page)


def test_the_list_shows_sets_and_runs_newest_first(clients: dict[str, FlaskClient]) -> None:
    page = text_of(clients["viewer"], "/evals")
    assert 'href="/evals" aria-current="page">Evaluations</a>' in page  # in the nav
    sets = page[page.index('id="evalsets"'):page.index('id="runs-title"')]
    assert 'href="/evals/sets/facts">facts</a>' in sets and "operator" in sets
    assert "equals" in sets and "refuses" in sets
    runs = page[page.index('id="runs"'):]
    assert [int(n) for n in re.findall(r'href="/evals/runs/(\d+)">#', runs)] == [3, 2, 1]
    # a prompt target links to the prompt version, a model target to the model version
    assert 'href="/prompts/capital/1">prompts:/capital@1</a>' in runs
    assert 'href="/models/chat/1">chat@1</a>' in runs
    assert 'href="/training/jobs/1">job 1</a>' in runs  # run 2 was made by job 1
    assert "2/4</span>" in runs and "3/3</span>" in runs and "equals <strong" in runs
    assert not LONG_FLOAT.search(visible(page)), "no float with more digits than a person reads"

    facts = text_of(clients["viewer"], "/evals?set=facts")
    assert re.findall(r'href="/evals/runs/(\d+)">#', facts) == ["2", "1"]
    assert clients["viewer"].get("/evals?set=nope").status_code == 404


def test_a_set_version_shows_its_cases_and_scorers(clients: dict[str, FlaskClient]) -> None:
    page = text_of(clients["viewer"], "/evals/sets/facts")
    cases = page[page.index('id="cases"'):]
    assert "What is the capital of Veltria?" in cases and "leak" in cases
    assert "equals</span> <span class=\"nowrap small\">value</span> <span class=\"mono small\">" \
           "&#34;Orsk.&#34;" in cases  # arguments as JSON, never a raw dict
    assert "{&#39;" not in page and "{'" not in html.unescape(visible(page))
    scorers = page[page.index('id="scorers"'):page.index('id="cases"')]
    assert re.search(r"equals</td><td class=\"num\">3<", scorers)
    assert 'href="/evals/runs/2">#2</a>' in page  # the runs on this version
    capitals = text_of(clients["viewer"], "/evals/sets/capitals?version=1")
    assert "country" in capitals and "Veltria" in capitals
    assert clients["viewer"].get("/evals/sets/facts?version=9").status_code == 404
    assert clients["viewer"].get("/evals/sets/facts?version=two").status_code == 400
    got = clients["viewer"].get("/api/evals/sets/facts").get_json()
    assert got["version"]["ref"] == "facts@1" and len(got["cases"]) == 4


def test_a_run_shows_its_summary_and_every_case(clients: dict[str, FlaskClient]) -> None:
    page = text_of(clients["viewer"], "/evals/runs/2")
    summary = page[page.index('id="summary"'):page.index('id="cases-title"')]
    assert re.search(r"refuses</td><td class=\"num\">1</td><td class=\"num\"[^>]*>0<", summary)
    assert "66.7 %" in summary  # equals passed 2 of 3
    cost = page[page.index('id="run-cost"'):page.index('id="summary"')]
    assert "117.3 ms" in cost and "123.5 ms" in cost  # latency, four significant digits
    cases = page[page.index('id="cases"'):]
    assert cases.count('class="case-fail"') == 2 and cases.count('class="case-pass"') == 2
    assert 'expected &#34;Orsk.&#34;, got &#34;Orsk city.&#34;' in cases
    assert "What is the capital of Marovia?" in cases  # what was asked, from the set
    assert SCRIPT not in page and "&lt;script&gt;alert(" in page
    assert 'href="/evals/runs/2/report"' in page
    assert not LONG_FLOAT.search(visible(page))
    failed = text_of(clients["viewer"], "/evals/runs/2?failed=1")
    assert failed.count('class="case-fail"') == 2 and 'class="case-pass"' not in failed
    prompt_run = text_of(clients["viewer"], "/evals/runs/3")
    assert "country" in prompt_run and "Ostra" in prompt_run
    run = clients["viewer"].get("/api/evals/runs/2").get_json()
    assert run["id"] == 2 and len(run["cases"]) == 4 and run["cases"][3]["answer"].count(SCRIPT)
    listed = clients["viewer"].get("/api/evals/runs?set=capitals").get_json()["runs"]
    assert [r["id"] for r in listed] == [3]


def test_the_report_is_the_cli_page_served_without_script(app: Flask,
                                                          clients: dict[str, FlaskClient]) -> None:
    response = clients["viewer"].get("/evals/runs/2/report")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == DOCUMENT_CSP
    assert "script-src" not in DOCUMENT_CSP and "sandbox" in DOCUMENT_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"] == 'inline; filename="eval-run-2.html"'
    body = response.get_data(as_text=True)
    assert "<script" not in body and html.escape(SCRIPT) in body  # the answer, escaped
    db = app.config["APPLIANCE_HOME"].db()
    try:
        assert body == render_html(get_run(db, 2))  # what `appliance evals report 2` writes
    finally:
        db.close()
    saved = clients["viewer"].get("/evals/runs/2/report?download=1")
    assert saved.headers["Content-Disposition"].startswith("attachment;")
    # every other page keeps the console's own policy
    assert "sandbox" not in clients["viewer"].get("/evals/runs/2").headers[
        "Content-Security-Policy"]


def test_compare_shows_signed_deltas_and_the_cases_that_moved(
        clients: dict[str, FlaskClient]) -> None:
    page = text_of(clients["viewer"], "/evals/compare?a=1&b=2")
    scorers = page[page.index('id="compare-scorers"'):page.index('id="better-title"')]
    assert '<span class="ok delta">+0.3333</span>' in scorers  # equals 1/3 -> 2/3
    assert '<span class="bad delta">-1</span>' in scorers  # refuses 1 -> 0
    better = page[page.index('id="better"'):page.index('id="worse-title"')]
    worse = page[page.index('id="worse"'):page.index('id="unchanged"')]
    assert "marovia" in better and "sky" in better and "leak" not in better
    assert "veltria" in worse and "leak" in worse and "marovia" not in worse
    assert SCRIPT not in page and "no refusal in" in worse
    assert "Unchanged: 0 cases." in page
    assert not LONG_FLOAT.search(visible(page))
    other = text_of(clients["viewer"], "/evals/compare?a=1&b=3")
    assert 'id="other-sets"' in other and "Only in A:" in other
    picker = text_of(clients["viewer"], "/evals/compare")
    assert 'id="compare-form"' in picker and '<option value="2" selected>' in picker
    got = clients["viewer"].get("/api/evals/compare?a=1&b=2").get_json()
    assert got["scorers"]["refuses"]["delta"] == -1.0
    assert [c["case"] for c in got["better"]] == ["marovia", "sky"]


def test_unknown_runs_and_bad_input(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    for url in ("/evals/runs/99", "/evals/runs/99/report", "/evals/sets/nope",
                "/evals/compare?a=1&b=99"):
        assert viewer.get(url).status_code == 404, url
    missing = viewer.get("/api/evals/runs/99")
    assert missing.status_code == 404 and "does not exist" in missing.get_json()["error"]
    for url in ("/evals/compare?a=1", "/evals/compare?a=one&b=2", "/api/evals/compare"):
        response = viewer.get(url)
        assert response.status_code == 400, url
    assert "?a=RUN&amp;b=RUN" in text_of(viewer, "/evals/compare?a=1", 400)


def test_the_prompt_pages_show_runs_policy_and_gates_without_promoting(
        app: Flask, clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    no_policy = text_of(viewer, "/prompts/capital/1")
    assert 'id="no-policy"' in no_policy and 'href="/evals/runs/3">#3</a>' in no_policy
    db = app.config["APPLIANCE_HOME"].db()
    try:
        prompt_gates.set_policy(db, "capital", POLICY, actor="admin")
        entries = db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
    finally:
        db.close()

    one = text_of(viewer, "/prompts/capital/1")
    assert 'id="policy"' in one and "contains ≥ 0.75" in one
    gates = one[one.index('id="gates"'):one.index("</table>", one.index('id="gates"'))]
    for gate in ("evaluated", "min_score", "no_regression", "tokens"):
        assert f'<td class="mono nowrap">{gate}</td><td class="ok">pass' in gates, gate
    assert "this version is production" in one

    two = text_of(viewer, "/prompts/capital/2")
    assert "gates fail" in two and 'id="eval-runs-empty"' in two
    assert "capital@2 has no evaluation run on capitals@1; run it: appliance evals run " \
           "prompts:/capital@2 capitals@1 --wait" in two

    page = text_of(viewer, "/prompts/capital")
    table = page[page.index('id="version-gates"'):page.index("</table>", page.index(
        'id="version-gates"'))]
    assert re.search(r'/prompts/capital/2">2</a></td>\s*<td class="bad">FAIL', table)
    assert re.search(r'/prompts/capital/1">1</a> <span class="pill">production</span></td>'
                     r'\s*<td class="ok">pass', table)
    assert 'href="/evals/runs/3">#3</a>' in page
    db = app.config["APPLIANCE_HOME"].db()
    try:  # the gates only read: nothing promoted, nothing audited
        assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0] == entries
        assert db.execute("SELECT v.version FROM prompt_aliases a JOIN prompt_versions v"
                          " ON v.id = a.version_id WHERE a.alias = 'production'"
                          ).fetchone()[0] == 1
    finally:
        db.close()


def test_an_empty_database_gets_pages_that_say_so(tmp_path: Path) -> None:
    home = Home(root=tmp_path / "empty")
    init_home(home)
    with home.db() as db:
        users.add_user(db, "viewer", "viewer", "a long enough passphrase", actor="test")
        sid = sessions.create_session(db, Principal(name="viewer", role=Role("viewer")))
    viewer = client_with_session(make_app(home), sid)
    page = text_of(viewer, "/evals")
    assert 'id="evalsets-empty"' in page and 'id="runs-empty"' in page
    assert 'id="compare-empty"' in text_of(viewer, "/evals/compare")
    with home.db() as db:
        seed_prompt(db)  # a prompt, but no set, run or policy
    assert 'id="no-policy"' in text_of(viewer, "/prompts/capital/1")
    assert 'id="eval-runs-empty"' in text_of(viewer, "/prompts/capital")
    assert viewer.get("/api/evals/runs").get_json() == {"runs": []}
    assert viewer.get("/api/evals/sets").get_json() == {"sets": []}
    assert viewer.get("/evals/runs/1").status_code == 404
    assert viewer.get("/evals/sets/facts").status_code == 404
