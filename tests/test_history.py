"""The recent-request history: what a record holds, clients by User-Agent, the hour by minute."""

import pytest

from claude_proxy.errors import APIError
from claude_proxy.events import Usage
from claude_proxy.exchange import RUN_FAILED, Exchange
from claude_proxy.history import History, Record, client_of, record_of


@pytest.mark.parametrize("agent, client", [
    (b"codex_cli_rs/0.171.0 (Debian 12; x86_64) xterm", "Codex"),
    (b"claude-cli/2.1.330 (external, cli)", "Claude Code"),
    (b"OpenAI/Python 1.99.0", "openai (Python)"),
    (b"Anthropic/Python 0.60.0", "anthropic (Python)"),
    (b"OpenAI/JS 5.1.0 openclaw", "OpenClaw"),
    (b"curl/8.5.0", "curl"),
    (b"Mozilla/5.0 (X11; Linux x86_64)", "browser"),
    (b"my tool/1.0", "my"),
    (b"", "-"),
    (None, "-"),
])
def test_client_of(agent, client):
    assert client_of(agent) == client


def exchange(**kw):
    return Exchange("id", 1000.0, key_id="k1", model="claude-haiku-4-5",
                    usage=Usage(input_tokens=20, output_tokens=7, cache_read_tokens=100),
                    account="a", first_token=0.25, **kw)


def test_a_record_holds_no_key_and_only_wire_api_requests_are_recorded():
    record = record_of("Messages", b"claude-cli/2.1.330", exchange(), 200, 1.5)
    assert record == Record(1000.0, "Messages", "Claude Code", "claude-haiku-4-5", "a", 200, None,
                            0.25, 1.5, 120, 100, 7)
    assert "k1" not in str(record.to_json())
    assert record_of(None, None, exchange(), 200, 0.1) is None  # not a wire API's


def test_an_error_after_a_200_is_a_failure():
    overloaded = APIError(503, "Overloaded.", "server_error", "upstream_overloaded")
    assert record_of("Responses", None, exchange(error=overloaded, error_kind=RUN_FAILED),
                     200, 1.0).failed
    assert record_of("Responses", None, exchange(), 429, 1.0).failed
    assert not record_of("Responses", None, exchange(), 200, 1.0).failed


def test_recent_newest_first_and_the_hour_by_minute():
    history = History()
    for at, status in ((60.0, 200), (65.0, 500), (3600.0 + 130, 200)):
        history.add(Record(at, "Chat", "curl", "m", None, status, None, None, 1.0, 10, 0, 2))
    assert [r.at for r in history.recent()] == [3730.0, 65.0, 60.0]
    minutes = history.per_minute(3730.0)
    assert len(minutes) == 60 and minutes[-1]["at"] == 3720
    assert minutes[-1] == {"at": 3720, "requests": 1, "failures": 0, "tokens_in": 10,
                           "tokens_out": 2}
    # The minute of 60-65 s is more than an hour before: out of the chart.
    assert sum(m["requests"] for m in minutes) == 1
