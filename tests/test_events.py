import json

from claude_proxy.events import (
    ApiRetry, ControlRequest, ControlResponse, MessageDelta, RateLimit, Result, TextDelta, ThinkingDelta,
    ToolInputDelta, ToolUseStart, Usage, Window, parse_line,
)

from tests.fakes import sample_lines


def events(name):
    return [e for e in map(parse_line, sample_lines(name)) if e is not None]


def test_partial_stream_gives_deltas_then_result():
    found = events("cli-2.1.330/stream-json-partial.jsonl")
    assert found[0].model == "claude-sonnet-4-5" and found[0].usage.input_tokens == 11
    assert [e.text for e in found if isinstance(e, TextDelta)] == ["MOCK RE", "PLY to:", " hello"]
    result = found[-1]
    assert isinstance(result, Result)
    assert (result.is_error, result.text, result.stop_reason) == (False, "MOCK REPLY to: hello", "end_turn")
    assert result.usage.output_tokens == 7


def test_thinking_deltas_are_not_text():
    texts = [e.text for e in events("cli-2.1.330/stream-json-thinking.jsonl") if isinstance(e, TextDelta)]
    assert "".join(texts) == "MOCK REPLY to: hello"


def test_error_result_and_retries():
    found = events("cli-2.1.330/error-401-default-retries.jsonl")
    retries = [e for e in found if isinstance(e, ApiRetry)]
    assert [r.attempt for r in retries] == list(range(1, 11))
    assert all(r.error_status == 401 for r in retries)
    result = found[-1]
    assert result.is_error and result.api_error_status == 401
    assert result.text.startswith("Failed to authenticate")


def test_garbage_lines_are_ignored():
    for line in (b"", b"not json", b"[1,2]", b'{"type":"stream_event","event":7}',
                 b'{"type":"stream_event","event":{"type":"content_block_delta","delta":"x"}}'):
        assert parse_line(line) is None


def test_usage_counts_cached_tokens_as_prompt_tokens():
    usage = Usage.from_cli({"input_tokens": 11, "output_tokens": 7,
                            "cache_read_input_tokens": 5, "cache_creation_input_tokens": 3})
    assert (usage.prompt_tokens, usage.output_tokens, usage.cache_read_tokens) == (19, 7, 5)
    assert Usage.from_cli(None) == Usage()


def test_thinking_streams_as_its_own_deltas():
    found = events("cli-2.1.330/stream-json-thinking.jsonl")
    assert "".join(e.text for e in found if isinstance(e, ThinkingDelta))


def test_tool_calls_and_the_control_channel():
    found = events("cli-2.1.330/tool-calls-held.jsonl")
    controls = [e for e in found if isinstance(e, ControlRequest)]
    assert [c.subtype for c in controls] == ["mcp_message"] * 3 + ["can_use_tool"]
    assert controls[-1].request["tool_name"] == "mcp__client__read_file"
    starts = [e for e in found if isinstance(e, ToolUseStart)]
    assert [(s.index, s.name) for s in starts] == [
        (1, "mcp__client__read_file"), (2, "mcp__client__exec")]
    arguments = "".join(e.partial_json for e in found if isinstance(e, ToolInputDelta) and e.index == 1)
    assert json.loads(arguments) == {"path": "/etc/hosts"}
    assert MessageDelta("tool_use", 7) in found


def test_structured_output_result():
    result = events("cli-2.1.330/structured-output.jsonl")[-1]
    assert result.structured_output == {"city": "Paris", "n": 3}
    assert result.stop_reason == "tool_use"


def test_rate_limit_event_with_the_subscription_windows():
    [event] = [e for e in events("cli-2.1.330/rate-limit-windows.jsonl") if isinstance(e, RateLimit)]
    assert (event.status, event.kind, event.using_overage) == ("allowed", "five_hour", False)
    assert (event.overage_status, event.overage_disabled_reason) == ("rejected", "org_level_disabled")
    five_hour, seven_day = event.windows
    assert (five_hour.name, five_hour.utilization, five_hour.status) == (
        "five_hour", 0.86, "allowed_warning")
    assert five_hour.resets_at == event.resets_at
    assert (seven_day.name, seven_day.utilization, seven_day.status) == ("seven_day", 0.31, "allowed")
    assert seven_day.resets_at > five_hour.resets_at


def test_rate_limit_event_drawing_on_extra_usage():
    [event] = [e for e in events("cli-2.1.330/rate-limit-overage.jsonl") if isinstance(e, RateLimit)]
    assert (event.status, event.overage_status, event.using_overage) == ("rejected", "allowed", True)


def test_rate_limit_event_with_odd_fields():
    line = json.dumps({"type": "rate_limit_event", "rate_limit_info": {
        "status": 5, "resetsAt": "soon", "isUsingOverage": "yes",
        "unifiedWindows": {"five_hour": {"utilization": True}, "x": 3}}}).encode()
    event = parse_line(line)
    assert event == RateLimit("", None, "", using_overage=False,
                              windows=(Window("five_hour", None, None, ""),))


def test_the_initialize_answer_says_what_each_alias_runs():
    [answer] = events("cli-2.1.330/initialize.jsonl")
    assert isinstance(answer, ControlResponse) and answer.request_id == "proxy-initialize"
    assert ("sonnet", "claude-sonnet-5-5") in answer.aliases
    assert ("opus", "claude-opus-5-5") in answer.aliases
    # Other control answers hold none.
    assert parse_line(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": "settings-1"}}).encode()) == ControlResponse("settings-1")


def test_a_refused_control_request_says_why():
    line = {"type": "control_response", "response": {
        "subtype": "error", "request_id": "settings-2", "error": "Unknown setting"}}
    assert parse_line(json.dumps(line).encode()) == ControlResponse(
        "settings-2", (), "Unknown setting")
