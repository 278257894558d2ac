"""
Several subscriptions behind one daemon, the quota they report, and the
extra-usage guard: the real CLI, logged in to two accounts (OAuth credentials
files with distinct tokens) against the mock API, which answers each account
with its own unified rate-limit headers.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted

from tests.integration.daemons import login
from tests.integration.test_daemon import CHAT
from tests.streams import data_events
from tests.integration.test_fidelity import settled

TOKENS = {"a": "sk-ant-oat01-account-a", "b": "sk-ant-oat01-account-b"}
RESPONSES, MESSAGES = "/v1/responses", "/v1/messages"


def unified(status="allowed", five_hour="0.42", resets=None, overage="rejected", five_status=None):
    resets = resets or int(time.time()) + 3600
    return {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": str(resets),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-5h-status": five_status or status,
        "anthropic-ratelimit-unified-5h-utilization": five_hour,
        "anthropic-ratelimit-unified-5h-reset": str(resets),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.31",
        "anthropic-ratelimit-unified-7d-reset": str(resets + 86400),
        "anthropic-ratelimit-unified-overage-status": overage,
    }


@pytest.fixture
def accounts(tmp_path, monkeypatch):
    """Two config dirs, each logged in to its own account."""
    # The CLI's OAuth profile call goes to the real API host: fail it fast, offline.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    dirs = {}
    for name, token in TOKENS.items():
        home = tmp_path / f"account-{name}"
        (home / ".claude").mkdir(parents=True)
        login(home, token)
        dirs[name] = str(home / ".claude")
    return dirs


def accounts_args(dirs, *extra):
    return [a for name, d in dirs.items() for a in ("--account", f"{name}={d}")] + list(extra)


def chat(text, stream=False):
    return {"model": "claude-sonnet-4", "stream": stream,
            "messages": [{"role": "user", "content": text}]}


def bodies():
    """The same plain request in each API's shape."""
    return [(CHAT, lambda text, stream: chat(text, stream)),
            (RESPONSES, lambda text, stream: {"model": "claude-sonnet-4", "input": text,
                                              "stream": stream}),
            (MESSAGES, lambda text, stream: {"model": "claude-sonnet-4", "max_tokens": 256,
                                             "stream": stream,
                                             "messages": [{"role": "user", "content": text}]})]


def served_by(response) -> str:
    return response.headers.getRawHeaders("x-claude-proxy-account")[0]


def tokens_seen(mock_api) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in mock_api.requests]


@pytest_twisted.ensureDeferred
async def test_quota_reaches_usage_metrics_and_headers_on_every_api(start_daemon, accounts,
                                                                    mock_api):
    mock_api.account_headers[TOKENS["a"]] = unified(five_hour="0.86", status="allowed_warning")
    mock_api.account_headers[TOKENS["b"]] = unified(five_hour="0.12")
    daemon = start_daemon(*accounts_args(accounts), api_key=False)
    for path, make in bodies():
        for stream in (False, True):
            # Two rounds: a stream's headers go out before its answer's own report.
            for _ in range(2):
                response = await daemon.post(path, make(f"quota {path} {stream}", stream))
                assert response.code == 200, await response.text()
                await response.content()
                await settled(daemon)
            account = served_by(response)
            headers = response.headers
            expected = "0.86" if account == "a" else "0.12"
            assert headers.getRawHeaders("anthropic-ratelimit-unified-5h-utilization") == [expected]
            assert headers.getRawHeaders("anthropic-ratelimit-unified-7d-utilization") == ["0.31"]

    usage = await (await daemon.get("/v1/usage")).json()
    by_name = {a["account"]: a for a in usage["data"]}
    assert by_name["a"]["quota"]["windows"]["five_hour"]["utilization"] == 0.86
    assert by_name["a"]["quota"]["windows"]["five_hour"]["status"] == "allowed_warning"
    assert by_name["b"]["quota"]["windows"]["seven_day"]["utilization"] == 0.31
    assert by_name["a"]["quota"]["age_seconds"] >= 0
    metrics = (await (await daemon.get("/metrics")).content()).decode()
    assert 'claude_proxy_quota_utilization{account="a",window="five_hour"} 0.86' in metrics
    assert 'claude_proxy_quota_utilization{account="b",window="five_hour"} 0.12' in metrics


@pytest_twisted.ensureDeferred
async def test_conversations_spread_and_stick(start_daemon, accounts, mock_api):
    daemon = start_daemon(*accounts_args(accounts), api_key=False)
    first = {}
    for i in range(8):
        response = await daemon.post(CHAT, chat(f"conversation {i}"))
        assert response.code == 200
        first[i] = served_by(response)
        await settled(daemon)
    assert set(first.values()) == {"a", "b"}
    for i in (0, 1, 2):
        follow_up = {"model": "claude-sonnet-4", "messages": [
            {"role": "user", "content": f"conversation {i}"},
            {"role": "assistant", "content": "MOCK REPLY"},
            {"role": "user", "content": "and then?"}]}
        response = await daemon.post(CHAT, follow_up)
        assert served_by(response) == first[i]
        await settled(daemon)


@pytest_twisted.ensureDeferred
async def test_a_spent_account_fails_over_and_is_skipped_until_it_resets(start_daemon, accounts,
                                                                        mock_api):
    daemon = start_daemon(*accounts_args(accounts), api_key=False)
    reset = int(time.time()) + 7200
    for stream in (False, True):
        # Find a conversation that starts on account a, then spend a.
        for i in range(50):
            text = f"spent {stream} {i}"
            first = await _first_account(daemon, text)
            await settled(daemon)
            if first == "a":
                break
        mock_api.reset()
        mock_api.account_force[TOKENS["a"]] = (
            f"error status=429 unified_reset={reset} unified_claim=five_hour")
        response = await daemon.post(CHAT, chat(text, stream))
        assert response.code == 200, await response.text()
        assert served_by(response) == "b"
        if stream:
            assert data_events(await response.content())[-1] == "[DONE]"
        assert tokens_seen(mock_api) == [TOKENS["a"], TOKENS["b"]]
        await settled(daemon)
        # a is skipped now: the mock sees only b.
        mock_api.reset()
        response = await daemon.post(CHAT, chat(text, stream))
        assert served_by(response) == "b"
        assert tokens_seen(mock_api) == [TOKENS["b"]]
        usage = await (await daemon.get("/v1/usage")).json()
        [a] = [x for x in usage["data"] if x["account"] == "a"]
        assert a["skipped"]["why"] == "usage_limit"
        assert abs(a["skipped"]["until"] - reset) <= 2
        await settled(daemon)
        mock_api.account_force.clear()
        if not stream:
            # Back to two usable accounts for the streamed round.
            daemon = start_daemon(*accounts_args(accounts), api_key=False)

    # Both spent: a 429 with the earliest reset, and no request reaches the mock for a.
    mock_api.reset()
    mock_api.account_force[TOKENS["b"]] = (
        f"error status=429 unified_reset={reset - 3600} unified_claim=five_hour")
    response = await daemon.post(CHAT, chat("both spent"))
    assert response.code == 429
    earliest = reset - 3600 - time.time()
    assert abs(int(response.headers.getRawHeaders("retry-after")[0]) - earliest) <= 2
    assert tokens_seen(mock_api) == [TOKENS["b"]]


async def _first_account(daemon, text):
    response = await daemon.post(CHAT, chat(text))
    assert response.code == 200
    return served_by(response)


@pytest_twisted.ensureDeferred
async def test_an_account_not_logged_in_is_skipped_and_shown(start_daemon, accounts, mock_api,
                                                             tmp_path):
    empty = tmp_path / "never-logged-in"
    empty.mkdir()
    daemon = start_daemon("--account", f"a={accounts['a']}", "--account", f"gone={empty}",
                          api_key=False)
    for i in range(6):
        response = await daemon.post(CHAT, chat(f"who answers {i}"))
        assert response.code == 200, await response.text()
        assert served_by(response) == "a"
        await settled(daemon)
    assert set(tokens_seen(mock_api)) == {TOKENS["a"]}
    health = await (await daemon.get("/health")).json()
    logins = {a["account"]: a for a in health["accounts"]}
    assert health["status"] == "ok"
    assert logins["a"]["status"] == "ok"
    assert logins["gone"]["status"] == "not_logged_in"


@pytest.mark.parametrize("overage", ["refuse", "allow"])
@pytest_twisted.ensureDeferred
async def test_the_extra_usage_guard(start_daemon, accounts, mock_api, overage):
    daemon = start_daemon("--account", f"a={accounts['a']}", "--overage", overage,
                          api_key=False)
    mock_api.account_headers[TOKENS["a"]] = unified(status="rejected", five_status="rejected",
                                                    overage="allowed", five_hour="1.0")
    # The answer that reveals extra usage is still delivered.
    response = await daemon.post(CHAT, chat("on extra usage"))
    assert response.code == 200
    assert (await response.json())["choices"][0]["message"]["content"].startswith("MOCK REPLY")
    await settled(daemon)
    mock_api.reset()
    response = await daemon.post(CHAT, chat("and again"))
    if overage == "refuse":
        assert response.code == 429
        error = (await response.json())["error"]
        assert error["code"] == "extra_usage_refused"
        assert 3500 <= int(response.headers.getRawHeaders("retry-after")[0]) <= 3600
        assert mock_api.requests == []
    else:
        assert response.code == 200
        assert len(mock_api.requests) == 1


@pytest_twisted.ensureDeferred
async def test_the_guard_sees_extra_usage_in_a_tool_loop(start_daemon, accounts, mock_api):
    # A tool call ends the answer before the CLI's turn ends; its report still counts.
    daemon = start_daemon("--account", f"a={accounts['a']}", api_key=False)
    mock_api.account_headers[TOKENS["a"]] = unified(status="rejected", five_status="rejected",
                                                    overage="allowed")
    calls = json.dumps([{"name": "read", "input": {"path": "x"}}])
    body = chat(f"read x [[mock:tools calls='{calls}']]")
    body["tools"] = [{"type": "function", "function": {"name": "read", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}}}]
    response = await daemon.post(CHAT, body)
    assert (await response.json())["choices"][0]["finish_reason"] == "tool_calls"
    await settled(daemon)
    response = await daemon.post(CHAT, chat("next turn"))
    assert response.code == 429
    assert (await response.json())["error"]["code"] == "extra_usage_refused"


THIRD_PARTY = ('error status=400 message="Third-party apps now draw from your extra usage, not '
               'your plan limits. Add more at claude.ai/settings/usage and keep going."')


@pytest_twisted.ensureDeferred
async def test_the_third_party_refusal_is_typed_on_every_api(start_daemon, accounts, mock_api):
    daemon = start_daemon("--account", f"a={accounts['a']}", api_key=False)
    mock_api.force = THIRD_PARTY
    for path, make in bodies():
        for stream in (False, True):
            response = await daemon.post(path, make("hello", stream))
            assert response.code == 403, (path, stream)
            body = await response.json()
            if path == MESSAGES:
                assert body["error"]["type"] == "permission_error"
                assert "extra usage" in body["error"]["message"]
            else:
                assert body["error"]["code"] == "extra_usage_required"
            await settled(daemon)
