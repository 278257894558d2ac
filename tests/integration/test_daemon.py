"""
The daemon, as the plugin builds it, on real loopback, driving the real CLI
against the mock Anthropic API.
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests.integration.daemons import build_daemon, eventually, login
from tests.streams import data_events

CHAT = "/v1/chat/completions"


def chat(text="hello", model="claude-sonnet-4", **over):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    body.update(over)
    return body


def system_text(request) -> str:
    system = request.body.get("system", [])
    if isinstance(system, str):
        return system
    return "\n".join(block.get("text", "") for block in system)


def user_text(request) -> str:
    texts = []
    for message in request.body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(b.get("text", "") for b in content if b.get("type") == "text")
    return "\n".join(texts)


@pytest_twisted.ensureDeferred
async def test_health_and_models(daemon, cli_path):
    response = await daemon.get("/health")
    assert response.code == 200
    health = await response.json()
    assert health["cli"]["version"] == "2.1.330"
    models = await (await daemon.get("/v1/models")).json()
    assert {m["id"] for m in models["data"]} >= {"claude-opus-4", "claude-sonnet-4", "claude-haiku-4"}


@pytest_twisted.ensureDeferred
async def test_non_stream_completion(daemon, mock_api):
    response = await daemon.post(CHAT, chat("hello there", model="openai/claude-opus-4"))
    assert response.code == 200
    body = await response.json()
    assert body["model"] == "claude-opus-4"
    assert body["choices"][0]["message"]["content"] == "MOCK REPLY to: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 11 + 5 + 3
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5
    assert usage["completion_tokens"] == 7
    [request] = mock_api.requests
    assert request.body["model"].startswith("claude-opus")


@pytest_twisted.ensureDeferred
async def test_stream_with_usage(daemon):
    response = await daemon.post(CHAT, chat("stream me", stream=True,
                                            stream_options={"include_usage": True}))
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    events = data_events(await response.content())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"claude-sonnet-4"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "MOCK REPLY to: stream me"
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 26


@pytest_twisted.ensureDeferred
async def test_system_prompt_and_conversation_reach_the_api(daemon, mock_api):
    body = {"model": "claude-haiku-4", "messages": [
        {"role": "system", "content": "SYSTEM-MARKER-1"},
        {"role": "developer", "content": [{"type": "text", "text": "SYSTEM-MARKER-2"}]},
        {"role": "user", "content": "USER-TURN-1"},
        {"role": "assistant", "content": "ASSISTANT-TURN-1"},
        {"role": "user", "content": "USER-TURN-2"},
        {"role": "user", "content": [{"type": "text", "text": "USER-TURN-3"}]},
    ]}
    response = await daemon.post(CHAT, body)
    assert response.code == 200
    [request] = mock_api.requests
    system = system_text(request)
    assert "SYSTEM-MARKER-1" in system and "SYSTEM-MARKER-2" in system
    sent = user_text(request)
    for marker in ("USER-TURN-1", "ASSISTANT-TURN-1", "USER-TURN-2", "USER-TURN-3"):
        assert marker in sent
    assert sent.index("USER-TURN-1") < sent.index("ASSISTANT-TURN-1") < sent.index("USER-TURN-3")


@pytest_twisted.ensureDeferred
async def test_200_kb_prompts(daemon, mock_api):
    system = "S" * 200_000
    prompt = "P" * 200_000 + " END"
    response = await daemon.post(CHAT, {"model": "claude-sonnet-4", "stream": True, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": prompt}]})
    assert response.code == 200
    events = data_events(await response.content())
    assert events[-1] == "[DONE]"
    [request] = mock_api.requests
    assert system in system_text(request)
    assert prompt in user_text(request)


@pytest_twisted.ensureDeferred
async def test_unknown_model_is_404_and_runs_nothing(daemon, mock_api):
    response = await daemon.post(CHAT, chat(model="gpt-4o"))
    assert response.code == 404
    assert (await response.json())["error"]["code"] == "model_not_found"
    assert daemon.runner.in_flight == 0 and mock_api.requests == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("directive, status, code", [
    ("status=401 type=authentication_error", 503, "cli_not_logged_in"),
    ("status=429 type=rate_limit_error", 429, "rate_limit_exceeded"),
    ("status=529 type=overloaded_error", 503, "upstream_overloaded"),
])
@pytest_twisted.ensureDeferred
async def test_api_errors_are_typed(daemon, mock_api, directive, status, code, stream):
    mock_api.force = f"error {directive}"
    response = await daemon.post(CHAT, chat(stream=stream))
    assert response.code == status
    error = (await response.json())["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}


class RawClient(Protocol):
    """Sends one request by hand, so the test decides when the connection drops."""

    def __init__(self, request: bytes):
        self.request = request
        self.received = b""

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_client_disconnect_ends_the_cli(daemon, mock_api, stream):
    mock_api.force = "stall"
    body = json.dumps(chat(stream=stream)).encode()
    port = int(daemon.url.rsplit(":", 1)[1])
    client = await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        RawClient(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))
    await eventually(lambda: mock_api.open_streams == 1)
    assert daemon.runner.in_flight == 1
    if stream:
        # The API has begun its answer: the stream is open and has its first chunk.
        await eventually(lambda: b"data: " in client.received)
    client.transport.loseConnection()
    await eventually(lambda: daemon.runner.in_flight == 0, timeout=10)
    await eventually(lambda: mock_api.open_streams == 0, timeout=10)


@pytest_twisted.ensureDeferred
async def test_subscription_login_is_used_not_the_daemons_api_key(start_daemon, home, mock_api,
                                                                  monkeypatch):
    token = login(home)
    # Set in the daemon's own environment, as a user's shell profile might: it
    # must not reach the CLI and silently move billing to the API.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-must-not-be-used")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "must-not-be-used")
    # The CLI's OAuth profile call goes to the real API host: fail it fast, offline.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    daemon = start_daemon(api_key=False)
    response = await daemon.post(CHAT, chat())
    assert response.code == 200, await response.text()
    [request] = mock_api.requests
    assert request.headers.get("authorization") == f"Bearer {token}"
    assert "x-api-key" not in request.headers


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_subscription_usage_limit_says_when_it_resets(start_daemon, home, mock_api,
                                                            monkeypatch, stream):
    login(home)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    reset = int(time.time()) + 3600
    mock_api.force = f"error status=429 unified_reset={reset} unified_claim=five_hour"
    daemon = start_daemon(api_key=False)
    response = await daemon.post(CHAT, chat(stream=stream))
    assert response.code == 429
    retry_after = int(response.headers.getRawHeaders("retry-after")[0])
    assert 3500 <= retry_after <= 3600
    error = (await response.json())["error"]
    assert error["code"] == "usage_limit_reached"
    assert "resets at" in error["message"] and "5-hour limit" in error["message"]


@pytest_twisted.ensureDeferred
async def test_not_logged_in(start_daemon, mock_api):
    daemon = start_daemon(api_key=False)
    response = await daemon.post(CHAT, chat())
    assert response.code == 503
    error = (await response.json())["error"]
    assert error["code"] == "cli_not_logged_in"
    assert "log in" in error["message"]
    assert mock_api.requests == []


def test_missing_cli_refuses_to_start(tmp_path):
    with pytest.raises(SystemExit) as caught:
        build_daemon(str(tmp_path / "no-such-claude"))
    message = str(caught.value)
    assert "not found" in message and "npm install -g @anthropic-ai/claude-code" in message


@pytest_twisted.ensureDeferred
async def test_a_pre_started_process_answers_and_warming_calls_no_api(start_daemon, mock_api):
    daemon = start_daemon("--warm", "1")
    pool = daemon.runner.pool
    for text in ("first", "second"):  # a shape is warmed once it repeats
        assert (await daemon.post(CHAT, chat(text))).code == 200
    await eventually(lambda: pool.snapshot().ready == 1)  # initialized, waiting on stdin
    assert len(mock_api.requests) == 2
    response = await daemon.post(CHAT, chat("third"))
    assert (await response.json())["choices"][0]["message"]["content"] == "MOCK REPLY to: third"
    # The warm process lived from before "second" was answered until it answered "third":
    # it sent the API nothing but that question (no wait needed to see it sent nothing more).
    assert [user_text(r).split("\n")[0] for r in mock_api.requests] == ["first", "second", "third"]
    seen = pool.snapshot()
    assert (seen.hits, seen.misses) == (1, 2)
    health = await (await daemon.get("/health")).json()
    assert health["warm"]["hits"] == 1 and health["warm"]["size"] == 1
