"""
The status page in a real headless browser (Debian's chromium, driven by
Playwright): the real CLI, logged in, against the mock API sending known
quota headers, behind a daemon run as a user runs it. Screenshots go to
$CLAUDE_PROXY_SCREENSHOTS (or the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says so
    expect = None

from tests.integration.daemons import find_cli, login, start_mock_api, start_twistd

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SECRET = "zebra-orchid-4471"  # in every prompt: it must never reach the page
KEY = "sk-status-page-test-key"
RESETS = int(time.time()) + 2 * 3600 + 17 * 60
WEEK_RESETS = RESETS + 3 * 86400
QUOTA = {
    "anthropic-ratelimit-unified-status": "allowed",
    "anthropic-ratelimit-unified-reset": str(RESETS),
    "anthropic-ratelimit-unified-representative-claim": "five_hour",
    "anthropic-ratelimit-unified-5h-status": "allowed",
    "anthropic-ratelimit-unified-5h-utilization": "0.42",
    "anthropic-ratelimit-unified-5h-reset": str(RESETS),
    "anthropic-ratelimit-unified-7d-status": "allowed_warning",
    "anthropic-ratelimit-unified-7d-utilization": "0.83",
    "anthropic-ratelimit-unified-7d-reset": str(WEEK_RESETS),
    "anthropic-ratelimit-unified-overage-status": "rejected",
}


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CLAUDE_PROXY_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is required (.ci/run installs Debian's chromium)")
        pytest.skip(f"no {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CLAUDE_PROXY_REQUIRE_BROWSER"):
            pytest.fail("Playwright's Python package is required (the test extra)")
        pytest.skip("no playwright")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    where = Path(os.environ.get("CLAUDE_PROXY_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def mock():
    api = start_mock_api(*(a for name, value in QUOTA.items()
                           for a in ("--header", f"{name}={value}")))
    yield api
    api.stop()


@pytest.fixture
def run_daemon(tmp_path, mock):
    """The real CLI, logged in to a subscription (offline), against the mock API."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    login(home)
    started = []

    def run(*args: str):
        daemon = start_twistd(
            tmp_path, "--cli-env", f"ANTHROPIC_BASE_URL={mock.base_url}", "--cli-retries", "0",
            *args, cli=find_cli(),
            # The CLI's OAuth profile call goes to the real API host: fail it fast, offline.
            env={"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"})
        started.append(daemon)
        return daemon

    yield run
    for daemon in started:
        daemon.stop()


def post(daemon, path: str, body: dict, headers: dict | None = None):
    return daemon.request("POST", path, json.dumps(body).encode(),
                          {"content-type": "application/json", **(headers or {})})


def chat(daemon, text: str, **headers: str):
    return post(daemon, "/v1/chat/completions",
                {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": text}]},
                {"user-agent": "OpenAI/Python 1.99.0", **headers})


class Watched:
    """A page with everything it fetched and every error it raised."""

    def __init__(self, browser, origin: str, color_scheme: str = "light") -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900},
                                           color_scheme=color_scheme)
        self.page = self.context.new_page()
        self.origin = origin
        self.fetched: list[str] = []
        self.errors: list[str] = []
        self.data: list[tuple[int, bytes]] = []
        self.page.on("request", lambda r: self.fetched.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("response", self._response)

    def _response(self, response) -> None:
        if response.url.endswith("/status/data"):
            self.data.append((response.status, response.body() if response.ok else b""))

    def close(self) -> None:
        self.context.close()

    def foreign(self) -> list[str]:
        return [u for u in self.fetched if not u.startswith(self.origin + "/")]


def test_the_page_shows_quota_load_and_requests_live(browser, run_daemon, shots):
    daemon = run_daemon()
    origin = f"http://127.0.0.1:{daemon.port}"
    assert chat(daemon, f"Say hi. {SECRET}").status == 200
    failed = post(daemon, "/v1/chat/completions",
                  {"model": "gpt-4o", "messages": [{"role": "user", "content": SECRET}]},
                  {"user-agent": "curl/8.5.0"})
    assert failed.status == 404

    watched = Watched(browser, origin)
    page = watched.page
    page.goto(origin + "/")
    page.wait_for_selector("#content:not([hidden])")
    page.wait_for_selector("#requests tr >> nth=1")

    # The quota, as the mock's headers said.
    card = page.locator(".account[data-account=default]")
    assert card.locator(".badge").inner_text() == "logged in"
    five, week = card.locator("[data-window=five_hour]"), card.locator("[data-window=seven_day]")
    assert five.locator(".window-label").inner_text() == "5-hour"
    assert five.locator(".pct").inner_text() == "42%"
    assert week.locator(".pct").inner_text() == "83%"
    assert five.locator(".fill").evaluate("e => e.style.width") == "42%"
    assert "warn" in week.locator(".fill").get_attribute("class")
    assert five.locator(".reset").get_attribute("data-resets") == str(RESETS)
    assert week.locator(".reset").get_attribute("data-resets") == str(WEEK_RESETS)
    countdown = five.locator(".reset").inner_text()
    hours, minutes = map(int, re.match(r"resets in (\d+)h (\d+)m", countdown).groups())
    left = RESETS - time.time()
    assert abs(hours * 3600 + minutes * 60 - left) < 120, countdown
    assert "Extra usage: rejected" in card.inner_text()
    assert "--overage refuse" in card.inner_text()

    # What runs now: nothing; the requests made, newest first, the failure marked.
    assert page.locator("#running").inner_text() == "0"
    assert page.locator("#queued").inner_text() == "0"
    rows = page.locator("#requests tr")
    assert rows.count() == 2
    newest, first = rows.nth(0), rows.nth(1)
    assert "failed" in newest.get_attribute("class")
    assert newest.locator("td").nth(1).inner_text() == "Chat"
    assert newest.locator("td").nth(2).inner_text() == "curl"
    assert "404" in newest.locator(".status").inner_text()
    assert "model_not_found" in newest.locator(".status").inner_text()
    cells = [first.locator("td").nth(i).inner_text() for i in range(11)]
    assert cells[1:3] == ["Chat", "openai (Python)"]
    assert cells[3].startswith("claude-sonnet-4")
    assert cells[4] == "default"
    assert cells[5] == "200"
    assert cells[6].endswith("ms") or cells[6].endswith(" s")
    assert int(cells[10]) > 0  # tokens out
    assert "failed" not in (first.get_attribute("class") or "")
    page.screenshot(path=str(shots / "status-page.png"), full_page=True)

    # A new request appears without a reload, on another API.
    response = post(daemon, "/v1/responses", {"model": "claude-haiku-4", "input": SECRET},
                    {"user-agent": "codex_cli_rs/0.171.0"})
    assert response.status == 200
    expect(rows).to_have_count(3, timeout=10000)
    assert rows.nth(0).locator("td").nth(1).inner_text() == "Responses"
    assert rows.nth(0).locator("td").nth(2).inner_text() == "Codex"
    expect(page.locator("#hour-totals")).to_contain_text("3 requests · 1 failed")

    # In the dark.
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots / "status-page-dark.png"), full_page=True)

    assert SECRET not in page.content()
    assert watched.data and all(SECRET.encode() not in body for _, body in watched.data)
    assert not watched.foreign(), watched.foreign()
    assert not watched.errors, watched.errors
    watched.close()


def test_with_a_key_nothing_shows_until_it_is_typed_in(browser, run_daemon, shots):
    daemon = run_daemon("--api-key", KEY)
    origin = f"http://127.0.0.1:{daemon.port}"
    assert chat(daemon, f"Hello {SECRET}", authorization=f"Bearer {KEY}").status == 200
    refused = daemon.request("GET", "/status/data")
    assert refused.status == 401
    assert "access-control-allow-origin" not in refused.headers

    watched = Watched(browser, origin, color_scheme="dark")
    page = watched.page
    page.goto(origin + "/")
    page.wait_for_selector("#key:not([hidden])")
    assert page.locator("#content").is_hidden()
    assert page.locator(".account").count() == 0
    assert watched.data == [(401, b"")]
    page.screenshot(path=str(shots / "status-page-key.png"))

    page.fill("#key-input", "not-the-key")
    page.click("button[type=submit]")
    page.wait_for_selector("#key-error:not([hidden])")
    assert page.locator("#content").is_hidden()

    page.fill("#key-input", KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("#content:not([hidden])")
    page.wait_for_selector("#requests tr")
    assert page.locator(".account[data-account=default] [data-window=five_hour] .pct") \
        .inner_text() == "42%"
    assert page.locator("#requests tr").count() == 1
    assert KEY not in page.content()
    assert SECRET not in page.content()
    assert not watched.foreign(), watched.foreign()
    # Chromium logs each refused data request (the two 401s) on the console: those are expected.
    unexpected = [e for e in watched.errors if "status of 401" not in e]
    assert len(watched.errors) - len(unexpected) == 2
    assert not unexpected, unexpected
    watched.close()
