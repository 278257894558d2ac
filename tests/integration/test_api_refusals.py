"""
The API's refusals through each door, as that API itself would say them: a
context overflow (one API call: the CLI never retries with less), another
invalid request, a spent plan window and a short rate limit; and the
request-id header of every Messages answer. The real CLI against the mock API.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted

from tests.integration.daemons import login
from tests.integration.test_accounts import bodies
from tests.streams import named_events

TOO_LONG = ('[[mock:error status=400 type=invalid_request_error '
            'message="prompt is too long: 210000 tokens > 200000 maximum"]]')
INVALID = ('[[mock:error status=400 type=invalid_request_error '
           'message="messages.1.content: Input should be a valid list"]]')
HISTORY = ("question one", "answer one")
ANTHROPIC = {"anthropic-version": ["2023-06-01"]}


def with_history(path: str, body: dict) -> dict:
    """The request with a history before its last user message (which holds the directive)."""
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": text}
             for i, text in enumerate(HISTORY)]
    if "input" in body:
        return {**body, "input": [*turns, {"role": "user", "content": body["input"]}]}
    return {**body, "messages": [*turns, *body["messages"]]}


async def failure(response) -> tuple[int, dict]:
    """The status and error object of a refusal, in a body or as a stream's last event."""
    if response.headers.getRawHeaders("content-type", [""])[0].startswith("text/event-stream"):
        last = named_events(await response.content())[-1]
        return response.code, last["response"]["error"] if "response" in last else last["error"]
    body = await response.json()
    return response.code, body["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest_twisted.ensureDeferred
async def test_context_overflow_is_the_apis_own_400_after_one_call(daemon, mock_api, stream):
    for path, make in bodies():
        mock_api.reset()
        headers = ANTHROPIC if path == "/v1/messages" else {}
        response = await daemon.post(path, with_history(path, make(f"go on {TOO_LONG}", stream)),
                                     headers=headers)
        status, error = await failure(response)
        assert status == 400, (path, error)
        assert error["message"].startswith("prompt is too long"), error
        if path == "/v1/messages":
            assert error["type"] == "invalid_request_error"
        else:
            assert (error["type"], error["code"]) == ("invalid_request_error",
                                                      "context_length_exceeded"), error
        # The conversation as sent, once: no compaction, no retry with a shorter history.
        [call] = mock_api.requests
        assert len(call.body["messages"]) >= len(HISTORY) + 1, call.body["messages"]


@pytest_twisted.ensureDeferred
async def test_other_invalid_requests_are_400s_with_the_apis_words(daemon, mock_api):
    for path, make in bodies():
        headers = ANTHROPIC if path == "/v1/messages" else {}
        response = await daemon.post(path, make(f"hi {INVALID}", False), headers=headers)
        status, error = await failure(response)
        assert (status, error["type"]) == (400, "invalid_request_error"), (path, error)
        assert error["message"] == "messages.1.content: Input should be a valid list"


@pytest_twisted.ensureDeferred
async def test_request_id_on_every_messages_answer(daemon, mock_api):
    for text in ("hello", f"hi {INVALID}"):
        response = await daemon.post("/v1/messages", bodies()[2][1](text, False), headers=ANTHROPIC)
        await response.content()
        [request_id] = response.headers.getRawHeaders("request-id")
        assert response.headers.getRawHeaders("x-request-id") == [request_id]


@pytest.fixture
def subscription(home, monkeypatch):
    """A subscription login; its OAuth profile call goes to the real API host: fail it offline."""
    login(home)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest_twisted.ensureDeferred
async def test_a_spent_window_in_each_apis_shape(start_daemon, mock_api, subscription):
    reset = int(time.time()) + 7200
    daemon = start_daemon(api_key=False)
    limit = f"[[mock:error status=429 unified_reset={reset} unified_claim=five_hour]]"
    for path, make in bodies():
        headers = ANTHROPIC if path == "/v1/messages" else {}
        response = await daemon.post(path, make(f"hi {limit}", False), headers=headers)
        status, error = await failure(response)
        assert status == 429, (path, error)
        wait = int(response.headers.getRawHeaders("retry-after")[0])
        assert 7000 <= wait <= 7200
        if path == "/v1/messages":
            assert error["type"] == "rate_limit_error"
            got = response.headers
            assert got.getRawHeaders("anthropic-ratelimit-unified-status") == ["rejected"]
            assert got.getRawHeaders("anthropic-ratelimit-unified-reset") == [str(reset)]
            assert got.getRawHeaders("request-id")
        else:
            # ChatGPT's shape, which Codex reads: the type, and when the window resets.
            assert (error["type"], error["code"], error["resets_at"]) == (
                "usage_limit_reached", "usage_limit_reached", reset), error
            assert 7000 <= error["resets_in_seconds"] <= 7200


@pytest_twisted.ensureDeferred
async def test_a_short_rate_limit_streams_as_codex_retries_it(daemon, mock_api):
    response = await daemon.post("/v1/responses", {
        "model": "claude-sonnet-4", "stream": True,
        "input": "hi [[mock:error status=429 retry_after=3]]"})
    assert response.code == 200
    stream = named_events(await response.content())
    assert [e["type"] for e in stream] == ["response.created", "response.in_progress",
                                           "response.failed"]
    error = stream[-1]["response"]["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "Please try again in " in error["message"]
