"""The console in a real browser: headless Chromium (Debian's package) driven by Selenium.

An admin logs in, opens a model, asks to promote its second version, reads the gate
report, confirms (accepting the browser's confirmation), sees the new version on the
overview and the alias move on the audit page. Screenshots of the main pages are written to tests/artifacts/
for a person to look at.

Chromium and chromedriver come from Debian's packages: the test installs them with
apt-get when they are missing and it runs as root; it skips, saying why, only where
they can not be installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from werkzeug.serving import make_server

from appliance.audit.service import ensure_key
from appliance.auth import users
from appliance.console import create_app
from appliance.promotion import set_policy
from appliance.registry import import_model, set_alias
from appliance.storage.home import Home, init_home

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
PASSWORD = "a long admin passphrase"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1280,900")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install the project's test extra)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def ensure_chromium() -> None:
    """Install Debian's chromium and chromedriver if missing; skip where that can not be."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and can not be installed here (needs root and "
                    "apt-get): apt-get install chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "chromium", "chromium-driver"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"Chromium could not be installed ({' '.join(command[1:])} failed: "
                        f"{done.stderr.strip().splitlines()[-1:] or done.returncode})")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("apt-get ran but /usr/bin/chromium or /usr/bin/chromedriver is missing")


def tiny_model(path: Path, scale: float) -> Path:
    """y = x * scale, x FP32 [-1, 1]: small enough to import in milliseconds."""
    node = helper.make_node("Mul", ["x", "scale"], ["y"])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [1], [scale])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(name="console_url")
def console_url_fixture(tmp_path: Path) -> Iterator[str]:
    home = Home(root=tmp_path / "home")
    init_home(home)
    ensure_key(home, "test")
    db = home.db()
    try:
        users.add_user(db, "alice", "admin", PASSWORD, actor="test")
        for scale in (1.0, 2.0):
            import_model(db, home.blobs, "churn", tiny_model(tmp_path / f"m{scale}.onnx", scale),
                         actor="test", description=f"multiplies by {scale}")
        set_alias(db, "churn", 1, "production", "test")
        # Imported versions have no held-out test split: a policy without metric gates.
        set_policy(db, "churn", "gates: {metrics: [], data_quality: null}\n", actor="test")
    finally:
        db.close()
    server = make_server("127.0.0.1", 0, create_app({"home": str(home.root)}), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(name="browser")
def browser_fixture(tmp_path: Path) -> Iterator[Any]:
    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / f"{name}.png")), name


def text_of(browser: Any, selector: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, selector).text)


def test_admin_promotes_a_version_in_the_browser(console_url: str, browser: Any) -> None:
    wait = WebDriverWait(browser, 10)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()  # every screenshot checked below is from this run
    browser.get(console_url + "/")
    assert "Log in" in browser.title, "an anonymous visitor is sent to log in"
    shot(browser, "login")
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait.until(expected_conditions.title_contains("Overview"))
    serving = text_of(browser, "#serving")
    assert "churn production 1" in serving
    shot(browser, "overview-before")

    browser.find_element(By.LINK_TEXT, "Models").click()
    wait.until(expected_conditions.presence_of_element_located((By.LINK_TEXT, "churn")))
    shot(browser, "models")
    browser.find_element(By.LINK_TEXT, "churn").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "versions")))
    shot(browser, "model")
    browser.find_element(By.CSS_SELECTOR, "#versions a[href$='/churn/2']").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "promote")))
    assert "production" not in text_of(browser, "#aliases")
    shot(browser, "version-before")

    browser.find_element(By.ID, "promote").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "gate-report")))
    assert "every gate passed" in text_of(browser, "#gate-verdict")
    assert "onnx_checker_parity" in text_of(browser, "#gate-report")
    shot(browser, "promote-gates")
    browser.find_element(By.ID, "reason").send_keys("better on last week's data")
    browser.find_element(By.ID, "confirm").click()
    confirm = wait.until(expected_conditions.alert_is_present())
    assert "version 2" in confirm.text
    confirm.accept()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "aliases"),
                                                                 "production"))
    assert "signed with Ed25519" in text_of(browser, "#model-signature")
    shot(browser, "version-after")

    browser.find_element(By.LINK_TEXT, "Overview").click()
    wait.until(expected_conditions.title_contains("Overview"))
    assert "churn production 2" in text_of(browser, "#serving")
    assert "by alice" in text_of(browser, "#serving")
    shot(browser, "overview-after")

    browser.find_element(By.LINK_TEXT, "Audit").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "audit")))
    newest = browser.find_elements(By.CSS_SELECTOR, "#audit tr")[1].text
    assert "alice" in newest and "model.alias.set" in newest and "better on last week" in newest
    browser.find_element(By.ID, "verify").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "verification"),
                                                                 "verified"))
    assert "FAILED" not in text_of(browser, "#verification")
    shot(browser, "audit")

    for page in ("training", "datasets", "monitoring", "alerts", "users", "settings"):
        browser.get(f"{console_url}/{page}")
        assert "Log in" not in browser.title, page
        shot(browser, page)
    saved = {p.name for p in ARTIFACTS.glob("*.png")}
    assert {"login.png", "overview-after.png", "version-after.png", "audit.png"} <= saved


# --- Layout: every page at the widths admins use, measured in the browser ----------------

WIDTHS = (1024, 1400, 1920)
PAGES = {
    "overview": "/", "models": "/models", "model": "/models/churn",
    "version": "/models/churn/2", "card": "/models/churn/2/card",
    "promote": "/models/churn/2/promote", "monitoring": "/monitoring",
    "monitoring-model": "/monitoring/churn", "llm": "/llm", "guardrails": "/guardrails",
    "guardrails-week": "/guardrails?since=7d", "capacity": "/capacity",
    "capacity-exceeds": "/capacity?slo_p95_ms=2.5", "capacity-profile": "/capacity/profiles/1",
    "prompts": "/prompts", "prompt": "/prompts/ticket-summary",
    "prompt-diff": "/prompts/ticket-summary?a=1&b=3", "prompt-version": "/prompts/ticket-summary/3",
    "datasets": "/datasets",
    "dataset": "/datasets/customers", "dataset-version": "/datasets/customers/1",
    "training": "/training", "job": "/training/jobs/1", "alerts": "/alerts",
    "audit": "/audit", "users": "/users", "settings": "/settings", "runs": "/runs",
    "run": "/runs/1", "evals": "/evals", "evalset": "/evals/sets/facts",
    "eval-run": "/evals/runs/2", "evals-compare": "/evals/compare?a=1&b=2",
    "prompt-evals": "/prompts/capital", "prompt-version-gates": "/prompts/capital/2",
}

# Every chart, table and preformatted block must lie inside its card (the nearest
# section or figure) and inside the viewport; the page must not scroll sideways.
OVERFLOWS = """
const vw = document.documentElement.clientWidth, out = [];
if (document.documentElement.scrollWidth > vw + 1)
  out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
for (const el of document.querySelectorAll('main table, main svg.chart, main pre, main figure')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0) continue;
  const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '');
  if (r.right > vw + 1 || r.left < -1) out.push(`${name} leaves the viewport (${r.left}..${r.right} of ${vw})`);
  const card = el.parentElement.closest('section, figure');
  if (card) {
    const c = card.getBoundingClientRect();
    if (r.right > c.right + 1 || r.left < c.left - 1)
      out.push(`${name} overflows its card (${r.left}..${r.right} in ${c.left}..${c.right})`);
  }
}
return out;
"""


@pytest.fixture(name="seeded_url")
def seeded_url_fixture(tmp_path: Path) -> Iterator[str]:
    from helpers.console import log_traffic, seed, seed_prompt_traffic
    from test_console_guardrails import seed_verdicts
    from test_console_monitoring import log_requests

    from appliance.audit import append
    from appliance.promotion import prompt_gates
    from appliance.storage.db import immediate

    home = Home(root=tmp_path / "seeded")
    seed(home)
    log_requests(home)
    log_traffic(home, rate=50, seconds=120)  # for the Capacity page's report
    seed_prompt_traffic(home)  # a second prompt, alias moves and requests naming prompts
    seed_verdicts(home, time.time())  # guardrail verdicts, one with a long detail
    db = home.db()
    try:
        # a policy whose gates capital@1 (evaluated by the seeded run 3) passes and
        # capital@2 (never evaluated) fails, for the gate tables of the prompt pages
        prompt_gates.set_policy(db, "capital", "evalset: capitals\nmin_score: {contains: "
                                "0.75}\nmax_regression: 0.0\nmax_tokens: 16\n", actor="admin")
        with immediate(db):  # a long detail, as a policy change or an import writes one
            append(db, actor="admin", action="model.policy", target="model:churn",
                   details={"policy": "gates: " + ", ".join(f"metric_{i} >= 0.{i}"
                                                            for i in range(40))})
    finally:
        db.close()
    server = make_server("127.0.0.1", 0, create_app({"home": str(home.root)}), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_no_chart_or_table_overflows_at_any_width(seeded_url: str, browser: Any) -> None:
    from helpers.console import PASSWORD as SEEDED_PASSWORD

    wait = WebDriverWait(browser, 20)
    browser.get(seeded_url + "/login")
    browser.find_element(By.ID, "username").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(SEEDED_PASSWORD)
    browser.find_element(By.ID, "login").click()
    wait.until(expected_conditions.presence_of_element_located((By.LINK_TEXT, "Models")))
    problems: list[str] = []
    for width in WIDTHS:
        browser.set_window_size(width, 1000)
        for name, path in PAGES.items():
            browser.get(seeded_url + path)
            wait.until(expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))
            assert "Internal Server Error" not in browser.page_source, path
            problems += [f"{width}px {path}: {p}" for p in browser.execute_script(OVERFLOWS)]
            if width == WIDTHS[0]:  # a whole-page screenshot of each, at the narrowest width
                browser.set_window_size(width, max(1000, min(6000, int(browser.execute_script(
                    "return document.documentElement.scrollHeight")))))
                shot(browser, f"layout-{width}-{name}")
                browser.set_window_size(width, 1000)
    assert not problems, "\n".join(problems)
