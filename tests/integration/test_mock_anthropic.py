"""The mock Anthropic API, checked against the real Claude Code CLI.

The CLI tests are what make the mock trustworthy: they show that the CLI accepts its SSE, and they pin
the texts the CLI prints for each API failure. They take the CLI from the `cli_path` fixture (skipped
without one); the tests of the mock alone always run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.cli_runner import CliRun, run_cli, user_line
from tests.integration.daemons import eventually
from tests.mock_anthropic import OUTPUT_TOKENS, START_USAGE, MockAnthropic, system_text


@pytest.fixture
def run(cli_path: str, mock_api: MockAnthropic, tmp_path: Path):
    """Run the real CLI once against the mock with a prompt and extra CLI arguments."""

    def run(prompt: str, *args: str, **kwargs) -> Deferred[CliRun]:
        stdin = user_line(prompt)
        return run_cli(reactor, cli_path, tmp_path / "scratch", stdin, mock_api.base_url, args, **kwargs)

    return run


def post(mock_api: MockAnthropic, prompt: str, stream: bool = False):
    messages = [{"role": "user", "content": prompt}]
    body = {"model": "m", "max_tokens": 10, "stream": stream, "messages": messages}
    return treq.post(mock_api.base_url + "/v1/messages?beta=true", json.dumps(body).encode())


@pytest_twisted.ensureDeferred
async def test_default_reply_streams_text_deltas(run, mock_api):
    # slow with no delay is the default reply: this shows the directive is cut out of the quote.
    result = await run("hello   there\n[[mock:slow delay=0]]")

    assert result.exit_code == 0
    assert result.result["result"] == "MOCK REPLY to: hello there"
    assert result.result["is_error"] is False
    assert result.result["stop_reason"] == "end_turn"
    deltas = result.text_deltas()
    assert len(deltas) > 1 and "".join(deltas) == "MOCK REPLY to: hello there"
    # The CLI adds up message_start and message_delta usage the way it does for the real API.
    usage = result.result["usage"]
    assert {k: usage[k] for k in START_USAGE} == START_USAGE | {"output_tokens": OUTPUT_TOKENS}

    [request] = mock_api.requests
    assert request.path == "/v1/messages?beta=true"
    assert request.headers["x-api-key"] == "sk-test"
    assert request.body["stream"] is True
    assert request.body["model"] == "claude-sonnet-5-5"


@pytest.mark.parametrize(
    ("directive", "status", "text"),
    [
        ("error status=401", 401, "Failed to authenticate. API Error: 401 mock authentication_error"),
        (
            "error status=429 retry_after=30",
            429,
            "API Error: Request rejected (429) · mock rate_limit_error",
        ),
        # An API-key user never sees the subscription text, even with the subscription headers.
        (
            "error status=429 unified_reset=1767225600 unified_claim=five_hour",
            429,
            "API Error: Request rejected (429) · mock rate_limit_error",
        ),
        (
            "error status=529",
            529,
            "API Error: 529 mock overloaded_error. This is a server-side issue, usually temporary — "
            "try again in a moment. If it persists, check your inference gateway (127.0.0.1:{port}).",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_api_errors(run, mock_api, directive, status, text):
    result = await run(f"x [[mock:{directive}]]")

    assert result.exit_code == 1
    assert result.result["result"] == text.format(port=mock_api.base_url.rsplit(":", 1)[1])
    assert result.result["api_error_status"] == status
    assert result.result["is_error"] is True
    assert len(mock_api.requests) == 1  # CLAUDE_CODE_MAX_RETRIES=0


@pytest_twisted.ensureDeferred
async def test_subscription_usage_limit_names_the_reset_time(run, mock_api):
    reset = int(time.time()) + 3 * 3600
    result = await run(
        f"x [[mock:error status=429 unified_reset={reset} unified_claim=five_hour]]",
        api_key=None,
        extra_env={"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test"},
    )

    assert result.result["api_error_status"] == 429
    # The reset is a wall-clock time in the CLI's time zone (UTC without TZ), dated when not today.
    limit_text = (
        r"You've hit your 5-hour limit · resets ([A-Z][a-z]{2} \d{1,2}, )?\d{1,2}(:\d\d)?[ap]m \(UTC\)"
    )
    assert re.fullmatch(limit_text, result.result["result"])
    [event] = [line for line in result.lines if line["type"] == "rate_limit_event"]
    assert event["rate_limit_info"] == {
        "status": "rejected",
        "resetsAt": reset,
        "rateLimitType": "five_hour",
        "isUsingOverage": False,
    }
    assert mock_api.requests[0].headers["authorization"] == "Bearer sk-ant-oat01-test"


@pytest_twisted.ensureDeferred
async def test_midstream_error_falls_back_to_non_streaming(run, mock_api):
    result = await run("hello [[mock:midstream_error]]")

    assert result.exit_code == 0
    assert result.result["result"] == "MOCK REPLY to: hello"
    assert result.result["is_error"] is False
    # The deltas of the failed stream were re-emitted already: only `result` is authoritative.
    assert "".join(result.text_deltas()) == "PARTIAL BEFORE ERROR "
    assert [r.body["stream"] for r in mock_api.requests] == [True, False]


@pytest_twisted.ensureDeferred
async def test_echo_system_shows_the_system_prompt(run, mock_api):
    result = await run("[[mock:echo_system]]", "--system-prompt", "SYSTEM MARKER 42")

    assert result.result["result"] == system_text(mock_api.requests[0].body)
    # The CLI keeps a billing header and an identity line ahead of the given prompt.
    assert result.result["result"].endswith("\nSYSTEM MARKER 42")


@pytest_twisted.ensureDeferred
async def test_many_deltas(run, mock_api):
    result = await run("[[mock:deltas n=2000 size=5]]")

    expected = "".join(chr(97 + i % 26) * 5 for i in range(2000))
    assert result.result["result"] == expected
    assert len(result.text_deltas()) == 2000


@pytest_twisted.ensureDeferred
async def test_max_tokens_makes_the_cli_continue(run, mock_api):
    result = await run("hello [[mock:max_tokens]]")

    # The CLI answers a max_tokens stop with its own user turn; that one has no directive.
    assert result.result["result"].startswith("MOCK REPLY to: Output token limit hit.")
    assert result.result["is_error"] is False
    assert len(mock_api.requests) == 2


@pytest_twisted.ensureDeferred
async def test_stall_hangs_the_cli_until_killed(run, mock_api):
    # Killed 2 s after the CLI printed message_start: nothing more comes in that window.
    result = await run("[[mock:stall]]", then=(b'"message_start"', 2.0))

    assert result.timed_out
    assert not [line for line in result.lines if line["type"] == "result"]
    assert [e["type"] for e in result.stream_events()] == ["message_start"]
    # The killed CLI's connection closing is what ends the stream.
    await eventually(lambda: mock_api.open_streams == 0)


@pytest_twisted.ensureDeferred
async def test_forced_scenario_overrides_the_prompt(run, mock_api):
    mock_api.force = "error status=401 type=authentication_error message=forced"
    result = await run("hello")

    assert result.result["result"] == "Failed to authenticate. API Error: 401 forced"


@pytest_twisted.ensureDeferred
async def test_not_logged_in_sends_nothing(run, mock_api):
    result = await run("hello", api_key=None)

    assert result.exit_code == 1
    assert result.result["result"] == "Not logged in · Please run /login"
    assert result.result["api_error_status"] is None
    assert mock_api.requests == []


@pytest_twisted.ensureDeferred
async def test_connection_refused(cli_path, mock_api, tmp_path):
    base_url = mock_api.base_url
    await mock_api.stop()
    result = await run_cli(reactor, cli_path, tmp_path / "scratch", user_line("hello"), base_url)

    assert result.result["result"] == (
        "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)"
    )
    assert result.result["api_error_status"] is None


# The mock on its own.


@pytest_twisted.ensureDeferred
async def test_non_streaming_answer_is_one_message(mock_api):
    response = await post(mock_api, "hi [[mock:max_tokens]]")
    message = await response.json()

    assert response.code == 200
    assert message["content"] == [{"type": "text", "text": "MOCK REPLY to: hi"}]
    assert message["stop_reason"] == "max_tokens"
    assert response.headers.getRawHeaders("request-id") == ["req_mock_0001"]


@pytest_twisted.ensureDeferred
async def test_error_headers(mock_api):
    response = await post(
        mock_api,
        '[[mock:error status=429 message="slow down" retry_after=30 should_retry=false '
        "unified_reset=1767225600 unified_claim=seven_day header.x-extra=1]]",
    )

    assert response.code == 429
    error = {"type": "rate_limit_error", "message": "slow down"}
    assert await response.json() == {"type": "error", "error": error}
    headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    assert headers["retry-after"] == "30"
    assert headers["x-should-retry"] == "false"
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-reset"] == "1767225600"
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "seven_day"
    assert headers["x-extra"] == "1"


@pytest_twisted.ensureDeferred
async def test_slow_stream_is_paced_and_counted(mock_api):
    started = time.monotonic()
    response = await post(mock_api, "hi [[mock:slow delay=0.02]]", stream=True)
    assert mock_api.open_streams == 1
    body = (await response.content()).decode()

    # 2 start events, 3 deltas, 3 end events, 7 gaps between them.
    assert time.monotonic() - started >= 7 * 0.02
    assert body.count("event: content_block_delta\n") == 3
    assert body.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert mock_api.open_streams == 0


@pytest_twisted.ensureDeferred
async def test_force_reset_and_bad_requests(mock_api):
    mock_api.force = "error status=529"
    assert (await post(mock_api, "hi")).code == 529
    mock_api.reset()
    assert mock_api.force is None and mock_api.requests == []

    unknown = await post(mock_api, "[[mock:nope]]")
    assert unknown.code == 400
    assert "unknown mock directive" in (await unknown.json())["error"]["message"]

    other = await treq.get(mock_api.base_url + "/v1/models")
    assert other.code == 404
    assert [r.path for r in mock_api.requests] == ["/v1/messages?beta=true", "/v1/models"]
