"""The Capacity pages: the profiles, the report on the request log, a profile's chart and
table, the version page's link, the JSON routes, and what bad input or no data gets."""

from __future__ import annotations

import html
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from flask.testing import FlaskClient
from helpers.console import client_with_session, log_traffic, make_app

from appliance.auth import sessions, users
from appliance.auth.permissions import Principal, Role
from appliance.capacity import store
from appliance.storage.home import Home, init_home

SVG = "{http://www.w3.org/2000/svg}"


def chart_of(page: str, div: str) -> ET.Element:
    match = re.search(rf'<div id="{div}">(<svg.*?</svg>)</div>', page, re.S)
    assert match, f"{div} holds an SVG chart"
    return ET.fromstring(match.group(1))


def test_the_page_lists_profiles_and_reports_each_model(console_home: Home,
                                                         clients: dict[str, FlaskClient]) -> None:
    # One whole minute of traffic, so that the peak minute is the same on every run.
    log_traffic(console_home, rate=50, seconds=60, end=time.time() // 60 * 60)
    viewer = clients["viewer"]
    page = viewer.get("/capacity")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'href="/capacity" aria-current="page">Capacity</a>' in text  # in the nav
    assert 'href="/capacity/profiles/1">#1</a>' in text and 'href="/models/churn/1">' in text
    card = text[text.index('id="capacity-churn"'):]
    assert "3,000 answered requests" in card
    for what in ("demand", "busy", "service time", "replay", "recommended", "within the SLO",
                 "memory to reserve"):
        assert f"<th>{what}</th>" in card, what
    assert 'class="verdict ok"' in card and "headroom" in card
    assert "serving.max_batch_size = " in card and "MiB</strong>" in card
    # no float printed with more digits than a person reads
    assert not re.search(r"\d\.\d{5,}", card)

    tight = viewer.get("/capacity?slo_p95_ms=2.5").get_data(as_text=True)
    verdict = re.search(r'<p class="verdict ([^"]+)" id="verdict-churn">(.*?)</p>', tight, re.S)
    assert verdict and verdict.group(1) == "warning"
    assert "EXCEEDS" in verdict.group(2) and "p95 ≤ 2.5 ms" in verdict.group(2)
    assert "last 24h" in tight and 'href="/capacity?since=1h&amp;slo_p95_ms=2.5"' in tight


def test_bad_input_is_a_400_that_says_what_was_wrong(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    page = viewer.get("/capacity?since=soon")
    assert page.status_code == 400
    text = html.unescape(page.get_data(as_text=True))
    assert 'id="capacity-error"' in text and "since 'soon': expected a duration" in text
    assert 'id="profiles"' in text  # the rest of the page is still there
    assert viewer.get("/capacity?slo_p95_ms=-1").status_code == 400
    assert viewer.get("/capacity?slo_p95_ms=fast").status_code == 400
    assert viewer.get("/capacity?since=2026-01-31").status_code == 200
    assert viewer.get("/capacity?model=nope").status_code == 404
    api = viewer.get("/api/capacity/report?since=yesterday")
    assert api.status_code == 400 and "expected a duration" in api.get_json()["error"]


def test_the_profile_page_draws_one_line_per_batch_size(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    page = viewer.get("/capacity/profiles/1")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    svg = chart_of(text, "throughput-chart")
    lines = svg.findall(f"{SVG}polyline")
    assert [line.find(f"{SVG}title").text for line in lines] == [
        "batch 1", "batch 4", "batch 16", "batch 64"]
    labels = {t.text for t in svg.findall(f"{SVG}text")}
    assert {"throughput (rows/s)", "latency p95 (ms)", "not stable"} <= labels
    marked = [c for c in svg.findall(f"{SVG}circle") if "marked" in c.get("class", "")
              and c.find(f"{SVG}title") is not None]
    assert len(marked) == 1 and "concurrency 4" in marked[0].find(f"{SVG}title").text
    # the table is render.profile_rows: a header and one row per point
    table = text[text.index('<table id="points">'):text.index("</table>",
                                                                text.index('id="points"'))]
    assert table.count("<tr") == 1 + 12 and "<th class=\"num\">rows/s</th>" in table
    assert 'class="unstable"' in table and 'id="unstable-note"' in text
    assert viewer.get("/capacity/profiles/99").status_code == 404
    missing = viewer.get("/api/capacity/profiles/99")
    assert missing.status_code == 404 and "no capacity profile 99" in missing.get_json()["error"]


def test_a_language_model_profile_is_drawn_per_prompt_and_answer_length(
        console_home: Home, clients: dict[str, FlaskClient]) -> None:
    points = []
    for prompt, answer in ((16, 32), (128, 32)):
        for streams in (1, 2, 4):
            points.append({
                "streams": streams, "prompt_tokens": prompt, "answer_tokens": answer,
                "stable": True, "windows": 3, "seconds": 3.0, "requests_per_s": 2.0 * streams,
                "tokens_per_s": 64.0 * streams, "ttft_ms": {"p50": 10.0 * streams,
                                                            "p95": 12.5 * streams},
                "itl_ms": {"p50": 5.0, "p95": 6.0}, "queue_ms": {"p95": 0.5},
                "e2e_ms": {"p95": 200.0}, "memory_bytes": 2**30, "activity_percent": 80.0})
    profile = {"kind": "llm", "device": "cuda", "provider": "CUDAExecutionProvider",
               "model_bytes": 3 * 2**30, "duration_s": 30.0, "skipped": [], "points": points,
               "kv": {"layers": 2, "kv_heads": 2, "head_size": 16, "bytes": 2,
                      "context_length": 2048}}
    with console_home.db() as db:
        profile_id = store.save(db, "churn@2", profile, actor="test")
    text = clients["viewer"].get(f"/capacity/profiles/{profile_id}").get_data(as_text=True)
    svg = chart_of(text, "throughput-chart")
    assert [line.find(f"{SVG}title").text for line in svg.findall(f"{SVG}polyline")] == [
        "prompt 16, answer 32 tokens", "prompt 128, answer 32 tokens"]
    labels = {t.text for t in svg.findall(f"{SVG}text")}
    assert {"throughput (tokens/s)", "time to first token p95 (ms)"} <= labels
    assert "<th class=\"num\">ttft p95 ms</th>" in text and "GPU mem" in text
    assert "3 GiB" in text and "KV cache: 2 layers" in text


def test_the_version_page_links_its_newest_profile(clients: dict[str, FlaskClient]) -> None:
    viewer = clients["viewer"]
    text = viewer.get("/models/churn/1").get_data(as_text=True)
    link = re.search(r'<a href="/capacity/profiles/(\d+)" id="capacity-link">([^<]+)</a>', text)
    assert link and link.group(1) == "1"
    assert re.fullmatch(r"Capacity profile: 12 points on cpu, \d{4}-\d\d-\d\d", link.group(2))
    assert "<title>churn@1 · appliance console</title>" in text
    assert 'id="capacity-link"' not in viewer.get("/models/churn/2").get_data(as_text=True)
    api = viewer.get("/api/models/churn/versions/1").get_json()
    assert api["capacity_profile"]["id"] == 1 and api["capacity_profile"]["points"] == 12


def test_the_json_routes_give_the_profiles_and_the_report(
        console_home: Home, clients: dict[str, FlaskClient]) -> None:
    log_traffic(console_home, rate=20, seconds=30)
    viewer = clients["viewer"]
    (listed,) = viewer.get("/api/capacity/profiles").get_json()["profiles"]
    assert listed["id"] == 1 and listed["model"] == "churn" and listed["points"] == 12
    assert viewer.get("/api/capacity/profiles?model=other").get_json()["profiles"] == []
    profile = viewer.get("/api/capacity/profiles/1").get_json()
    assert profile["kind"] == "tabular" and len(profile["points"]) == 12
    report = viewer.get("/api/capacity/report?since=1h&slo_p95_ms=50").get_json()
    assert report["slo_p95_ms"] == 50 and report["models"][0]["model"] == "churn"
    assert report["models"][0]["requests"] == 600
    paths = clients["anonymous"].get("/api/openapi.json").get_json()["paths"]
    assert {"/api/capacity/profiles", "/api/capacity/profiles/{profile_id}",
            "/api/capacity/report"} <= set(paths)


def test_an_empty_database_gets_pages_that_say_so(tmp_path: Path) -> None:
    home = Home(root=tmp_path / "empty")
    init_home(home)
    with home.db() as db:
        users.add_user(db, "viewer", "viewer", "a long enough passphrase", actor="test")
        sid = sessions.create_session(db, Principal(name="viewer", role=Role("viewer")))
    viewer = client_with_session(make_app(home), sid)
    page = viewer.get("/capacity")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'id="profiles-empty"' in text and "appliance capacity profile NAME@VERSION" in text
    assert 'id="capacity-empty"' in text and "No answered request in this period" in text
    assert viewer.get("/api/capacity/report").get_json()["models"] == []
    assert viewer.get("/api/capacity/profiles").get_json() == {"profiles": []}
    assert viewer.get("/capacity/profiles/1").status_code == 404
