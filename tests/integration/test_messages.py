"""
The Anthropic Messages API end to end: requests to /v1/messages through the
daemon and the real CLI, the mock API recording what the model was sent.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.integration.test_fidelity import PNG, api_messages, settled
from tests.mock_anthropic import OUTPUT_TOKENS, THINKING_TEXT
from tests.streams import named_events as events

MESSAGES = "/v1/messages?beta=true"  # as Claude Code posts it: the query must not matter
HEADERS = {"anthropic-version": ["2023-06-01"], "anthropic-beta": ["interleaved-thinking-2025-05-14"]}
WEATHER = {"name": "weather", "description": "Weather of a city", "cache_control": {"type": "ephemeral"},
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def message(text="hello", model="claude-sonnet-4", **over) -> dict:
    body = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": text}]}
    body.update(over)
    return body


def calls(*calls: tuple[str, dict]) -> str:
    spec = json.dumps([{"name": n, "input": i} for n, i in calls])
    return f"[[mock:tools calls='{spec}']]"


async def post(daemon, body, status=200, **kw):
    response = await daemon.post(MESSAGES, body, headers=kw.pop("headers", HEADERS), **kw)
    assert response.code == status, await response.text()
    if body.get("stream") and status == 200:
        assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
        return events(await response.content())
    return await response.json()


def streamed_message(stream: list[dict]) -> dict:
    """The message a stream builds up, block by block (as the SDK's accumulator does)."""
    [start] = [e for e in stream if e["type"] == "message_start"]
    result = dict(start["message"])
    blocks = []
    for e in stream:
        if e["type"] == "content_block_start":
            assert e["index"] == len(blocks)
            blocks.append(dict(e["content_block"], _json=""))
        elif e["type"] == "content_block_delta":
            block, delta = blocks[e["index"]], e["delta"]
            key = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature",
                   "input_json_delta": "_json"}[delta["type"]]
            block[key] = (block.get(key, "") if key != "signature" else "") + delta[
                "partial_json" if key == "_json" else key]
        elif e["type"] == "message_delta":
            result.update(e["delta"])
            result["usage"] = dict(result["usage"], **e["usage"])
    for block in blocks:
        raw = block.pop("_json")
        if block["type"] == "tool_use":
            block["input"] = json.loads(raw) if raw else {}
    result["content"] = blocks
    return result


@pytest_twisted.ensureDeferred
async def test_text_message(daemon, mock_api):
    body = await post(daemon, message("from messages", system=[
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        metadata={"user_id": "u1"}, temperature=0.3, top_k=5))
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == "claude-sonnet-4"
    assert body["content"] == [{"type": "text", "text": "MOCK REPLY to: from messages"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["usage"] == {"input_tokens": 11, "cache_creation_input_tokens": 3,
                             "cache_read_input_tokens": 5, "output_tokens": OUTPUT_TOKENS}
    [request] = mock_api.requests
    assert "Be brief." in json.dumps(request.body["system"])
    assert request.body["max_tokens"] == 1000  # the client's max_tokens bounds the CLI
    assert not request.body.get("thinking") or request.body["thinking"]["type"] == "disabled"


@pytest_twisted.ensureDeferred
async def test_stream_event_sequence(daemon):
    stream = await post(daemon, message("streamed", stream=True))
    kinds = [e["type"] for e in stream]
    n = len(kinds) - 7
    assert kinds == ["message_start", "ping", "content_block_start", *["content_block_delta"] * (n + 1),
                     "content_block_stop", "message_delta", "message_stop"]
    start = stream[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == 11 and start["usage"]["cache_read_input_tokens"] == 5
    assert stream[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert stream[-2]["usage"]["output_tokens"] == OUTPUT_TOKENS
    assert streamed_message(stream)["content"] == [{"type": "text", "text": "MOCK REPLY to: streamed"}]


@pytest.mark.parametrize("stream", [False, True])
@pytest_twisted.ensureDeferred
async def test_two_parallel_tool_calls_and_their_results(daemon, mock_api, stream):
    directive = calls(("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"}))
    first = message(f"weather? {directive}", tools=[WEATHER], stream=stream,
                    tool_choice={"type": "auto", "disable_parallel_tool_use": False})
    answer = await post(daemon, first)
    if stream:
        answer = streamed_message(answer)
    assert answer["stop_reason"] == "tool_use"
    uses = [b for b in answer["content"] if b["type"] == "tool_use"]
    assert [(u["name"], u["input"]) for u in uses] == [("weather", {"city": "Paris"}),
                                                        ("weather", {"city": "Oslo"})]
    assert all(u["id"].startswith("toolu_") for u in uses)
    await settled(daemon)
    mock_api.reset()

    follow = message(tools=[WEATHER], stream=stream, messages=[
        first["messages"][0],
        {"role": "assistant", "content": answer["content"]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0]["id"], "content": "sunny"},
            {"type": "tool_result", "tool_use_id": uses[1]["id"], "is_error": True,
             "content": [{"type": "text", "text": "no station"}]}]}])
    final = await post(daemon, follow)
    if stream:
        final = streamed_message(final)
    assert final["stop_reason"] == "end_turn"
    [request] = mock_api.requests
    sent = api_messages(request)
    assert [b["type"] for b in sent[-2]["content"]] == ["tool_use", "tool_use"]
    assert sent[-2]["content"][0]["id"] == uses[0]["id"]
    results = [b for b in sent[-1]["content"] if b.get("type") == "tool_result"]
    assert [(r["tool_use_id"], r.get("is_error", False)) for r in results] == [
        (uses[0]["id"], False), (uses[1]["id"], True)]
    assert "no station" in json.dumps(results[1]["content"])


@pytest_twisted.ensureDeferred
async def test_image_multi_turn_and_system_message(daemon, mock_api):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    await post(daemon, message(system="Top.", messages=[
        {"role": "system", "content": "Folded in."},
        {"role": "user", "content": "first turn"},
        {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}]))
    [request] = mock_api.requests
    system = json.dumps(request.body["system"])
    assert "Top." in system and "Folded in." in system
    sent = api_messages(request)
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"][0]["text"] == "first answer"
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}} in sent[-1]["content"]


@pytest_twisted.ensureDeferred
async def test_structured_output(daemon, mock_api):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"],
              "additionalProperties": False}
    directive = calls(("StructuredOutput", {"answer": 42}))
    body = await post(daemon, message(f"compute {directive}",
                                      output_config={"format": {"type": "json_schema", "schema": schema}}))
    [block] = body["content"]
    assert block["type"] == "text" and json.loads(block["text"]) == {"answer": 42}
    assert body["stop_reason"] == "end_turn"


@pytest_twisted.ensureDeferred
async def test_max_tokens_and_stop_sequences(daemon, mock_api):
    body = await post(daemon, message("long [[mock:max_tokens]]", max_tokens=50))
    assert body["stop_reason"] == "max_tokens"
    assert mock_api.requests[0].body["max_tokens"] == 50
    await settled(daemon)
    pieces = json.dumps(["one two ", "thr", "ee four"])
    stream = await post(daemon, message(f"count [[mock:text pieces='{pieces}']]", stream=True,
                                        stop_sequences=["three", "nine"]))
    final = streamed_message(stream)
    assert final["content"] == [{"type": "text", "text": "one two "}]
    assert (final["stop_reason"], final["stop_sequence"]) == ("stop_sequence", "three")


@pytest_twisted.ensureDeferred
async def test_thinking_is_signed_and_kept_on_in_a_tool_loop(daemon, mock_api):
    stream = await post(daemon, message(
        "think then call [[mock:thinking]]", stream=True, thinking={"type": "adaptive"},
        output_config={"effort": "medium"}))
    answer = streamed_message(stream)
    thinking = answer["content"][0]
    assert thinking["type"] == "thinking" and thinking["thinking"] == THINKING_TEXT
    assert thinking["signature"]
    assert mock_api.requests[0].body["thinking"]["type"] != "disabled"
    await settled(daemon)
    mock_api.reset()

    # A tool loop whose assistant turn carries its signed thinking: thinking stays on. The
    # CLI keeps a replayed thinking block only when the turn's model is the one it runs,
    # which a full model id (as Claude Code sends) guarantees.
    loop = message(model="claude-sonnet-4-5", tools=[WEATHER], thinking={"type": "enabled", "budget_tokens": 2048}, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            thinking, {"type": "tool_use", "id": "toolu_x1", "name": "weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x1", "content": "cold"}]}])
    await post(daemon, loop)
    [request] = mock_api.requests
    assert request.body["thinking"]["type"] != "disabled"
    replayed = api_messages(request)[-2]["content"]
    assert replayed[0] == thinking


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("directive, status, kind, retry_after", [
    ("status=429 type=rate_limit_error", 429, "rate_limit_error", True),
    ("status=529 type=overloaded_error", 529, "overloaded_error", False),
    ("status=500 type=api_error", 502, "api_error", False),
])
@pytest_twisted.ensureDeferred
async def test_api_errors_in_anthropic_shape(daemon, mock_api, directive, status, kind, retry_after,
                                             stream):
    mock_api.force = f"error {directive}"
    response = await daemon.post(MESSAGES, message(stream=stream), headers=HEADERS)
    assert response.code == status
    error = await response.json()
    assert error["type"] == "error" and set(error["error"]) == {"type", "message"}
    assert error["error"]["type"] == kind
    if retry_after:
        [seconds] = response.headers.getRawHeaders("retry-after")
        assert int(seconds) > 0


@pytest_twisted.ensureDeferred
async def test_a_stream_that_fails_after_it_began_ends_with_an_error_event(daemon):
    # The API's stream breaks after some text; the CLI's retry answers anew, which cannot be sent.
    stream = await post(daemon, message("tell me [[mock:midstream_error]]", stream=True))
    assert stream[0]["type"] == "message_start"
    assert stream[-1] == {"type": "error", "error": {"type": "api_error", "message": stream[-1]["error"]["message"]}}
    assert "message_stop" not in [e["type"] for e in stream]


@pytest_twisted.ensureDeferred
async def test_request_errors_in_anthropic_shape(daemon, mock_api):
    missing = message()
    del missing["max_tokens"]
    error = await post(daemon, missing, 400)
    assert error["error"]["type"] == "invalid_request_error" and "max_tokens" in error["error"]["message"]
    assert (await post(daemon, message(model="gpt-4o"), 404))["error"]["type"] == "not_found_error"
    refused = await post(daemon, message(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]), 400)
    assert "mcp_servers" in refused["error"]["message"]
    assert mock_api.requests == []  # nothing ran


@pytest_twisted.ensureDeferred
async def test_a_wrong_api_key_is_an_authentication_error(start_daemon, mock_api):
    daemon = start_daemon("--api-key", "sk-proxy-right")
    wrong = {**HEADERS, "x-api-key": ["sk-proxy-wrong"]}
    response = await daemon.post(MESSAGES, message(), headers=wrong)
    assert response.code == 401
    assert (await response.json())["error"]["type"] == "authentication_error"
    right = {**HEADERS, "x-api-key": ["sk-proxy-right"]}
    assert (await post(daemon, message("keyed"), headers=right))["content"][0]["text"] == "MOCK REPLY to: keyed"


@pytest_twisted.ensureDeferred
async def test_count_tokens_and_models_run_no_cli(daemon, mock_api):
    response = await daemon.post("/v1/messages/count_tokens?beta=true", {
        "model": "claude-sonnet-4", "system": "s" * 40, "tools": [WEATHER],
        "messages": [{"role": "user", "content": "x" * 400}]}, headers=HEADERS)
    assert response.code == 200
    counted = await response.json()
    assert set(counted) == {"input_tokens"} and counted["input_tokens"] > 110
    bad = await daemon.post("/v1/messages/count_tokens", {"model": "claude-sonnet-4"}, headers=HEADERS)
    assert bad.code == 400 and (await bad.json())["error"]["type"] == "invalid_request_error"

    listing = await (await daemon.get("/v1/models", headers=HEADERS)).json()
    assert listing["data"][0]["type"] == "model" and listing["first_id"] == "claude-opus-4"
    one = await daemon.get("/v1/models/claude-sonnet-4-5-20250929", headers=HEADERS)
    assert (await one.json())["id"] == "claude-sonnet-4-5-20250929"
    unknown = await daemon.get("/v1/models/gpt-4o", headers=HEADERS)
    assert unknown.code == 404 and (await unknown.json())["error"]["type"] == "not_found_error"
    assert mock_api.requests == [] and daemon.runner.in_flight == 0
