import pytest

from claude_proxy.anthropic_messages.errors import unified_headers
from claude_proxy.errors import (
    CANNOT_RUN, EXCERPT_CHARS, APIError, classify_cli_error, classify_exit, excerpt,
)
from claude_proxy.openai_chat.errors import openai_error

from tests.fakes import sample_json

NOW = 1_767_000_000.0


def result_of(name):
    return [o for o in sample_json(name) if o["type"] == "result"][-1]


def test_real_401_is_not_logged_in():
    result = result_of("cli-2.1.330/error-401-default-retries.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW)
    assert (error.status, error.code) == (503, "cli_not_logged_in")
    assert "/login" in error.message


def test_real_529_is_overloaded():
    result = result_of("cli-2.1.330/error-529-no-retries.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW)
    assert (error.status, error.code) == (503, "upstream_overloaded")


def test_not_logged_in_text_without_status():
    error = classify_cli_error("Not logged in · Please run /login", None, NOW)
    assert (error.status, error.code) == (503, "cli_not_logged_in")


def test_real_subscription_usage_limit():
    lines = sample_json("error-429-unified-5h-oauth.jsonl")
    [limit] = [o["rate_limit_info"] for o in lines if o["type"] == "rate_limit_event"]
    result = result_of("error-429-unified-5h-oauth.jsonl")
    now = limit["resetsAt"] - 3600
    error = classify_cli_error(result["result"], result["api_error_status"], now,
                               limit["resetsAt"])
    assert (error.status, error.code, error.retry_after) == (429, "usage_limit_reached", 3600)
    assert "resets at" in error.message and "5-hour limit" in error.message


def test_usage_limit_text_without_reset_time():
    error = classify_cli_error("You've hit your Sonnet limit", 429, NOW)
    assert (error.code, error.retry_after) == ("usage_limit_reached", None)


@pytest.mark.parametrize("sample", ["error-429-retry-after.jsonl", "error-429-no-claim-oauth.jsonl"])
def test_real_rate_limits_without_usage_limit(sample):
    result = result_of(sample)
    error = classify_cli_error(result["result"], result["api_error_status"], NOW)
    assert (error.status, error.type, error.code) == (429, "rate_limit_error", "rate_limit_exceeded")


@pytest.mark.parametrize("sample, code", [
    ("not-logged-in.jsonl", "cli_not_logged_in"),
    ("error-401.jsonl", "cli_not_logged_in"),
    ("error-529.jsonl", "upstream_overloaded"),
    ("connection-refused.jsonl", "upstream_unreachable"),
])
def test_real_failures(sample, code):
    result = result_of(sample)
    assert classify_cli_error(result["result"], result["api_error_status"], NOW).code == code


@pytest.mark.parametrize("text, status, code", [
    ("API Error: Connection refused", None, "upstream_unreachable"),
    ("There's an issue with the selected model (claude-x).", None, "model_not_found"),
    ("API Error: 500 Internal server error", 500, "upstream_error"),
    ("The CLI crashed", None, "cli_error"),
])
def test_other_failures(text, status, code):
    assert classify_cli_error(text, status, NOW).code == code


def test_exit_without_result_mentions_stderr_briefly():
    error = classify_exit(1, None, "boom\n" * 500, NOW)
    assert (error.status, error.code) == (502, "cli_error")
    assert "exit code 1" in error.message and "boom" in error.message
    assert len(error.message) < EXCERPT_CHARS + 100


def test_exit_by_signal():
    assert "signal 9" in classify_exit(None, 9, "", NOW).message


def test_excerpt_is_one_short_line():
    assert excerpt("a\nb\t c") == "a b c"
    assert len(excerpt("x" * 10_000)) == EXCERPT_CHARS


def test_real_500_is_an_upstream_error_not_an_overload():
    result = result_of("cli-2.1.330/error-500-no-retries.jsonl")
    assert "server-side issue" in result["result"]
    error = classify_cli_error(result["result"], result["api_error_status"], NOW)
    assert (error.status, error.code, error.retry_after) == (502, "upstream_error", None)
    assert "500" in error.message


def test_a_5xx_known_only_from_text_is_an_upstream_error():
    error = classify_exit(1, None, "API Error: 502 bad gateway. This is a server-side issue", NOW)
    assert (error.status, error.code) == (502, "upstream_error")


def test_a_429_gets_the_apis_retry_after_when_the_cli_retried_it():
    result = result_of("cli-2.1.330/error-429-retry-after-2-retries.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW, retry_after=4)
    assert (error.status, error.code, error.retry_after) == (429, "rate_limit_exceeded", 4)


def test_a_429_without_a_known_wait_still_says_when_to_retry():
    result = result_of("error-429-retry-after.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW)
    assert error.retry_after == 10


def test_the_third_party_refusal_is_its_own_error():
    # The API's words (a 400), as the CLI relays them.
    text = ('API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":'
            '"Third-party apps now draw from your extra usage, not your plan limits. Add more at '
            'claude.ai/settings/usage and keep going."}}')
    error = classify_cli_error(text, 400, 0)
    assert (error.status, error.type, error.code) == (403, "permission_error", "extra_usage_required")
    assert "extra usage" in error.message and error.retry_after is None


def test_a_cli_the_wrapper_cannot_run_is_unavailable():
    error = classify_exit(127, None, f"{CANNOT_RUN} /opt/claude: No such file or directory\n", 0)
    assert (error.status, error.code) == (503, "cli_unavailable")
    assert error.message == "The Claude Code CLI at /opt/claude cannot run: No such file or directory"


def test_real_context_overflow_is_the_apis_400():
    result = result_of("cli-2.1.330/error-400-prompt-too-long.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW,
                               api_type=result["api_error_type"])
    assert (error.status, error.type, error.code) == (400, "invalid_request_error",
                                                      "context_length_exceeded")
    # Claude Code compacts its conversation on these words.
    assert error.message.startswith("prompt is too long")


def test_real_invalid_request_is_a_400_with_the_apis_words():
    result = result_of("cli-2.1.330/error-400-invalid-request.jsonl")
    error = classify_cli_error(result["result"], result["api_error_status"], NOW,
                               api_type=result["api_error_type"])
    assert (error.status, error.type, error.code) == (400, "invalid_request_error",
                                                      "invalid_request")
    assert error.message == ("max_tokens: 100000 > 64000, which is the maximum allowed number "
                             "of output tokens for claude-sonnet-5-5")


def test_a_413_of_the_api_stays_a_413():
    error = classify_cli_error("Request too large (max 32MB).", 413, NOW,
                               api_type="request_too_large")
    assert (error.status, error.code) == (413, "request_too_large")


def test_usage_limit_carries_its_reset():
    error = classify_cli_error("You've hit your 5-hour limit", 429, NOW, int(NOW) + 600)
    assert (error.resets_at, error.retry_after) == (int(NOW) + 600, 600)


def test_usage_limit_in_openais_shape_is_chatgpts():
    error = APIError(429, "Limit.", "rate_limit_error", "usage_limit_reached", retry_after=600,
                     resets_at=int(NOW) + 600)
    status, body = openai_error(error)
    assert status == 429
    # What Codex parses to say "You've hit your usage limit. Try again at …".
    assert body["error"]["type"] == "usage_limit_reached"
    assert (body["error"]["resets_at"], body["error"]["resets_in_seconds"]) == (int(NOW) + 600, 600)
    assert unified_headers(error) == {"anthropic-ratelimit-unified-status": "rejected",
                                      "anthropic-ratelimit-unified-reset": str(int(NOW) + 600)}
    short = APIError(429, "Slow down.", "rate_limit_error", "rate_limit_exceeded", retry_after=5)
    assert openai_error(short)[1]["error"]["type"] == "rate_limit_error"
    assert unified_headers(short) == {}
