"""
The Responses API end to end: the real CLI behind the daemon, the mock API
recording what the model would have been sent.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq

from claude_proxy.openai_responses.parse import thinking_block
from tests.integration.test_fidelity import PNG, api_messages, calls_directive, settled
from tests.mock_anthropic import THINKING_TEXT
from tests.streams import named_events as events

RESPONSES = "/v1/responses"
TOOLS = [
    {"type": "function", "name": "exec_command", "description": "Run a command.", "strict": False,
     "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}},
                    "required": ["cmd"]}},
    {"type": "function", "name": "read", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}},
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.", "tools": [
        {"type": "function", "name": "spawn_agent", "description": "Start an agent.",
         "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]},
    {"type": "web_search", "external_web_access": False},
]


def body(input, **over) -> dict:
    return {"model": "claude-sonnet-4", "input": input, **over}


async def created(daemon, request: dict) -> dict:
    response = await daemon.post(RESPONSES, request)
    assert response.code == 200, await response.text()
    return await response.json()


async def streamed(daemon, request: dict) -> list[dict]:
    response = await daemon.post(RESPONSES, {**request, "stream": True})
    assert response.code == 200, await response.text()
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/event-stream")
    got = events(await response.content())
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    return got


def blocks(message: dict, kind: str) -> list[dict]:
    return [b for b in message["content"] if b["type"] == kind]


@pytest_twisted.ensureDeferred
async def test_text(daemon, mock_api):
    response = await created(daemon, body("hello there", instructions="Be brief."))
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["model"] == "claude-sonnet-4"
    [message] = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "MOCK REPLY to: hello there"
    assert response["output_text"] == "MOCK REPLY to: hello there"
    usage = response["usage"]
    assert usage["input_tokens"] == 19 and usage["input_tokens_details"]["cached_tokens"] == 5
    assert usage["output_tokens"] == 7 and usage["total_tokens"] == 26
    assert response["instructions"] == "Be brief." and response["store"] is True
    [request] = mock_api.requests
    assert "Be brief." in json.dumps(request.body["system"])


@pytest_twisted.ensureDeferred
async def test_stream_event_sequence(daemon, mock_api):
    got = await streamed(daemon, body([{"role": "user", "content": "stream please"}]))
    kinds = [e["type"] for e in got]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"} and len(kinds) > 10
    text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert text == "MOCK REPLY to: stream please"
    final = got[-1]["response"]
    assert final["status"] == "completed" and final["output"] == [got[-2]["item"]]
    assert final["usage"]["output_tokens"] == 7
    assert {e["item_id"] for e in got if "item_id" in e} == {final["output"][0]["id"]}


@pytest_twisted.ensureDeferred
async def test_tool_round_trip_and_previous_response_id(daemon, mock_api):
    directive = calls_directive(("exec_command", {"cmd": "ls"}), text="Looking.")
    first = await created(daemon, body(f"list files {directive}", tools=TOOLS))
    message, call = first["output"]
    assert message["content"][0]["text"] == "Looking."
    assert call["type"] == "function_call" and call["name"] == "exec_command"
    assert json.loads(call["arguments"]) == {"cmd": "ls"}
    assert call["call_id"].startswith("call") and call["id"].startswith("fc_")
    await settled(daemon)
    [request] = mock_api.requests
    offered = {t["name"] for t in request.body["tools"]}
    assert offered == {"mcp__client__exec_command", "mcp__client__read",
                       "mcp__client__multi_agent_v1__spawn_agent"}  # web_search left out

    # Continued by id: only the call's output is sent.
    mock_api.reset()
    second = await created(daemon, body(
        [{"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt\nb.txt"}],
        tools=TOOLS, previous_response_id=first["id"]))
    assert second["output_text"].startswith("MOCK REPLY to:")
    assert second["previous_response_id"] == first["id"]
    [request] = mock_api.requests
    user, assistant, results = api_messages(request)
    [tool_use] = blocks(assistant, "tool_use")
    assert tool_use["name"] == "mcp__client__exec_command" and tool_use["input"] == {"cmd": "ls"}
    assert blocks(assistant, "text")[0]["text"] == "Looking."
    [result] = blocks(results, "tool_result")
    assert result["tool_use_id"] == tool_use["id"]
    assert result["content"] == [{"type": "text", "text": "a.txt\nb.txt"}]

    # GET gives it back; DELETE forgets it; then it is a 404 in OpenAI's shape.
    got = await daemon.get(f"{RESPONSES}/{first['id']}")
    assert (await got.json())["output"] == first["output"]
    gone = await (await treq.delete(f"{daemon.url}{RESPONSES}/{first['id']}")).json()
    assert gone == {"id": first["id"], "object": "response", "deleted": True}
    for response in (await daemon.get(f"{RESPONSES}/{first['id']}"),
                     await daemon.post(RESPONSES, body("x", previous_response_id=first["id"]))):
        assert response.code == 404
        error = (await response.json())["error"]
        assert set(error) == {"message", "type", "param", "code"}


@pytest_twisted.ensureDeferred
async def test_tool_round_trip_streamed_with_input_items(daemon, mock_api):
    directive = calls_directive(("read", {"path": "a"}), ("read", {"path": "b"}))
    got = await streamed(daemon, body(f"read both {directive}", tools=TOOLS, store=False))
    calls = [e["item"] for e in got if e["type"] == "response.output_item.done"]
    assert [c["type"] for c in calls] == ["function_call", "function_call"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"path": "a"}, {"path": "b"}]
    assert calls[0]["call_id"] != calls[1]["call_id"]
    deltas = [e for e in got if e["type"] == "response.function_call_arguments.delta"]
    assert {d["output_index"] for d in deltas} == {0, 1} and len(deltas) > 2
    assert got[-1]["type"] == "response.completed"
    assert got[-1]["response"]["output"] == calls

    # Nothing was stored; the client sends the whole conversation back, as Codex does.
    assert (await daemon.get(f"{RESPONSES}/{got[-1]['response']['id']}")).code == 404
    await settled(daemon)
    mock_api.reset()
    follow_up = [{"role": "user", "content": [{"type": "input_text", "text": "read both"}]},
                 *calls,
                 *[{"type": "function_call_output", "call_id": c["call_id"], "output": f"in {n}"}
                   for c, n in zip(calls, "ab")]]
    got = await streamed(daemon, body(follow_up, tools=TOOLS, store=False))
    assert got[-1]["response"]["status"] == "completed"
    [request] = mock_api.requests
    _, assistant, results = api_messages(request)
    assert [b["input"] for b in blocks(assistant, "tool_use")] == [{"path": "a"}, {"path": "b"}]
    assert [r["content"][0]["text"] for r in blocks(results, "tool_result")] == ["in a", "in b"]
    assert [r["tool_use_id"] for r in blocks(results, "tool_result")] == \
        [b["id"] for b in blocks(assistant, "tool_use")]


@pytest_twisted.ensureDeferred
async def test_namespace_tool_round_trip(daemon, mock_api):
    directive = calls_directive(("spawn_agent", {"task": "t"}))
    response = await created(daemon, body(f"delegate {directive}", tools=TOOLS))
    [call] = response["output"]
    assert (call["namespace"], call["name"]) == ("multi_agent_v1", "spawn_agent")
    await settled(daemon)
    mock_api.reset()
    await created(daemon, body([
        {"role": "user", "content": "delegate"}, call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "agent 7"}],
        tools=TOOLS, store=False))
    [request] = mock_api.requests
    _, assistant, results = api_messages(request)
    assert blocks(assistant, "tool_use")[0]["name"] == "mcp__client__multi_agent_v1__spawn_agent"
    assert blocks(results, "tool_result")[0]["content"][0]["text"] == "agent 7"


@pytest_twisted.ensureDeferred
async def test_image_and_developer_message(daemon, mock_api):
    await created(daemon, body([
        {"type": "message", "role": "developer", "content": [{"type": "input_text",
                                                              "text": "DEV NOTE"}]},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}]},
    ]))
    [request] = mock_api.requests
    [user] = api_messages(request)
    [image] = blocks(user, "image")
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": PNG}
    assert "DEV NOTE" in json.dumps(request.body["system"])


@pytest_twisted.ensureDeferred
async def test_structured_output(daemon, mock_api):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    calls = json.dumps([{"name": "StructuredOutput", "input": {"n": 3}}])
    response = await created(daemon, body(
        f"count [[mock:tools calls='{calls}']]",
        text={"format": {"type": "json_schema", "name": "count", "strict": True,
                         "schema": schema}}))
    assert json.loads(response["output_text"]) == {"n": 3}
    assert response["text"]["format"]["name"] == "count"


@pytest_twisted.ensureDeferred
async def test_max_output_tokens_is_incomplete(daemon, mock_api):
    response = await created(daemon, body("long [[mock:max_tokens]]", max_output_tokens=16))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["max_output_tokens"] == 16
    got = await streamed(daemon, body("long [[mock:max_tokens]]", max_output_tokens=16))
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest_twisted.ensureDeferred
async def test_reasoning_summary_and_encrypted_content_round_trip(daemon, mock_api):
    # A full model id, as the CLI replays a thinking block only under the model it runs.
    ask = {"model": "claude-sonnet-5-5", "reasoning": {"effort": "high", "summary": "auto"},
           "include": ["reasoning.encrypted_content"], "tools": TOOLS, "store": False}
    directive = calls_directive(("read", {"path": "x"}))
    got = await streamed(daemon, body("think [[mock:thinking]]", **ask))
    kinds = [e["type"] for e in got]
    assert "response.reasoning_summary_part.added" in kinds
    summary = "".join(e["delta"] for e in got
                      if e["type"] == "response.reasoning_summary_text.delta")
    assert summary == THINKING_TEXT
    reasoning = got[-1]["response"]["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": THINKING_TEXT}]
    assert thinking_block(reasoning["encrypted_content"])["thinking"] == THINKING_TEXT

    # A tool loop with the signed thinking sent back keeps thinking on; without it, off.
    await settled(daemon)
    mock_api.reset()
    first = await created(daemon, body(f"use a tool {directive}", **ask))
    [call] = first["output"]
    asked = {"role": "user", "content": "use a tool"}
    loop = [call, {"type": "function_call_output", "call_id": call["call_id"], "output": "ok"}]
    for items, thinking in (([asked, reasoning, *loop], True), ([asked, *loop], False)):
        await settled(daemon)
        mock_api.reset()
        await created(daemon, body(items, **ask))
        [request] = mock_api.requests
        _, assistant, results = api_messages(request)
        assert blocks(assistant, "tool_use")[0]["input"] == {"path": "x"}
        assert blocks(results, "tool_result")[0]["content"] == [{"type": "text", "text": "ok"}]
        assert (request.body.get("thinking", {}).get("type") == "adaptive") is thinking
        assert [b["thinking"] for b in blocks(assistant, "thinking")] == (
            [THINKING_TEXT] if thinking else [])


@pytest_twisted.ensureDeferred
async def test_hosted_tool_only_request_still_answers(daemon, mock_api):
    response = await created(daemon, body("search the web", tools=[{"type": "web_search"}]))
    assert response["output_text"] == "MOCK REPLY to: search the web"
    assert response["tools"] == [{"type": "web_search"}]
    [request] = mock_api.requests
    assert not [t for t in request.body.get("tools", []) if "web" in t["name"]]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("directive, status, code", [
    ("status=401 type=authentication_error", 503, "cli_not_logged_in"),
    ("status=429 type=rate_limit_error", 429, "rate_limit_exceeded"),
])
@pytest_twisted.ensureDeferred
async def test_api_errors_are_typed(daemon, mock_api, directive, status, code, stream):
    mock_api.force = f"error {directive}"
    response = await daemon.post(RESPONSES, body("x", stream=stream))
    if stream and status == 429:
        # A short rate limit streams as response.failed at once: Codex waits and retries only that.
        assert response.code == 200
        error = events(await response.content())[-1]["response"]["error"]
        assert error["code"] == code and "Please try again in" in error["message"]
        return
    assert response.code == status
    error = (await response.json())["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}


@pytest_twisted.ensureDeferred
async def test_failure_after_the_stream_began_is_response_failed(daemon, mock_api):
    got = await streamed(daemon, body("go [[mock:midstream_error]]"))
    assert got[-1]["type"] == "response.failed"
    assert got[-1]["response"]["status"] == "failed"
    assert got[-1]["response"]["error"]["code"] == "server_error"


@pytest_twisted.ensureDeferred
async def test_bad_requests_are_400s_in_openai_shape(daemon, mock_api):
    for request, param in [(body("x", background=True), "background"),
                           (body([{"type": "item_reference", "id": "msg_1"}]), "input[0]"),
                           (body(7), "input")]:
        response = await daemon.post(RESPONSES, request)
        assert response.code == 400
        assert (await response.json())["error"]["param"] == param
    assert mock_api.requests == []
