"""The Language models page: usage per model version and day, its charts, its empty state."""

from __future__ import annotations

import time

from flask.testing import FlaskClient
from helpers.llm_usage import day, log_llm, row

from appliance.storage.home import Home


def test_the_page_shows_usage_per_version_and_day(console_home: Home,
                                                    clients: dict[str, FlaskClient]) -> None:
    now = time.time()
    log_llm(console_home, [row(now - 3 * 86400), row(now - 60, ttft_ms=30.0),
                           row(now - 30, status=500, ttft_ms=None)])
    viewer = clients["viewer"]
    page = viewer.get("/llm")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'href="/llm"' in text and "Language models" in text  # in the nav
    assert "chat@1" in text and 'class="llm-usage"' in text
    assert f"<th>{day(now - 3 * 86400)}</th>" in text and "<th>total</th>" in text
    assert "GPU-seconds" in text and "EUR" in text
    for chart in ("requests-chart", "tokens-chart"):
        assert f'<div id="{chart}"><svg' in text
    assert "requests per day" in text and "cost EUR" in text

    recent = viewer.get("/llm?since=24h").get_data(as_text=True)
    assert f"<th>{day(now - 3 * 86400)}</th>" not in recent and "since " in recent
    assert viewer.get("/llm?since=soon").status_code == 400
    assert viewer.get("/llm?model=nope").status_code == 404
    api = viewer.get("/api/llm/usage?model=chat").get_json()
    assert api["versions"][0]["requests"] == 3 and api["versions"][0]["errors"] == 1


def test_without_requests_the_page_says_how_to_serve_one(
        clients: dict[str, FlaskClient]) -> None:
    text = clients["viewer"].get("/llm").get_data(as_text=True)
    assert 'id="llm-empty"' in text and "no language-model requests" in text
    assert "appliance models import NAME FOLDER" in text
    assert "appliance models promote NAME@1" in text
    assert "<svg" not in text
