"""
Conversation fidelity end to end: the real CLI behind the daemon, the mock API
recording what the model would have been sent.
"""

from __future__ import annotations

import base64
import json
import re

import pytest_twisted
from twisted.internet import reactor, task

from tests.integration.daemons import eventually
from tests.integration.test_daemon import CHAT
from tests.streams import data_events
from tests.mock_anthropic import THINKING_TEXT

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cf00000301010018dd8db00000000049454e44ae426082")).decode()

# JSON Schema features OpenClaw's tools use.
SCHEMA_FEATURES = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "file to read"},
        "mode": {"anyOf": [{"const": "text"}, {"enum": ["bin", "hex"]}]},
        "limit": {"type": "integer", "exclusiveMinimum": 0},
        "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "env": {"type": "object", "patternProperties": {"^[A-Z_]+$": {"type": "string"}}},
    },
    "required": ["path"],
    "additionalProperties": False,
}
TOOL_NAMES = ["read", "write", "edit", "exec", "process", "web_search", "web_fetch", "browser",
              "canvas", "nodes", "cron", "message", "sessions_list", "image"]
TOOLS = [{"type": "function", "function": {
    "name": name, "description": f"The {name} tool. " * 20,
    "parameters": SCHEMA_FEATURES if name == "read" else {
        "type": "object", "properties": {"arg": {"type": "string"}}, "required": ["arg"]}}}
    for name in TOOL_NAMES]
BIG_SYSTEM = "You are a personal assistant running inside OpenClaw.\n" + "## Rules\n- be useful\n" * 2600


def calls_directive(*calls: tuple[str, dict], text: str = "") -> str:
    spec = json.dumps([{"name": n, "input": i} for n, i in calls])
    return f"[[mock:tools calls='{spec}' text=\"{text}\"]]"


def openclaw_body(last_text: str, stream: bool = True, **over) -> dict:
    body = {
        "model": "claude-sonnet-4",
        "stream": stream,
        "messages": [
            {"role": "system", "content": BIG_SYSTEM},
            {"role": "user", "content": "[Sat 2026-11-21 10:00 UTC] check the notes file"},
            {"role": "user", "content": [{"type": "text", "text": last_text}]},
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "max_completion_tokens": 8192,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    body.update(over)
    return body


def api_messages(recorded) -> list:
    # The CLI adds its own environment notes as system-role messages.
    return [m for m in recorded.body["messages"] if m["role"] != "system"]


def sanitized(call_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", call_id)


async def streamed(daemon, body) -> list:
    response = await daemon.post(CHAT, body)
    assert response.code == 200, await response.text()
    return data_events(await response.content())


async def completed(daemon, body) -> dict:
    response = await daemon.post(CHAT, body)
    assert response.code == 200, await response.text()
    return await response.json()


async def settled(daemon) -> None:
    """Every CLI the daemon started has exited (so no request can still be on its way)."""
    await eventually(lambda: daemon.runner.in_flight == 0)
    await task.deferLater(reactor, 0.2, lambda: None)


@pytest_twisted.ensureDeferred
async def test_openclaw_tool_round_trip_streaming(daemon, mock_api):
    directive = calls_directive(("read", {"path": "notes.md", "tags": ["a"]}), text="Let me look.")
    events = await streamed(daemon, openclaw_body(f"what do my notes say? {directive}"))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "Let me look."
    calls = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    first = calls[0]
    assert first["index"] == 0 and first["type"] == "function"
    assert first["function"] == {"name": "read", "arguments": ""}
    call_id = first["id"]
    assert sanitized(call_id) == call_id  # survives OpenClaw's id sanitizing
    arguments = "".join(tc["function"]["arguments"] for tc in calls)
    assert len(calls) > 2  # the arguments arrived in pieces
    assert json.loads(arguments) == {"path": "notes.md", "tags": ["a"]}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 7

    await settled(daemon)
    [request] = mock_api.requests  # the CLI was stopped before it could go on
    offered = {t["name"]: t for t in request.body["tools"]}
    assert sorted(offered) == sorted(f"mcp__client__{n}" for n in TOOL_NAMES)
    assert offered["mcp__client__read"]["input_schema"] == SCHEMA_FEATURES
    assert offered["mcp__client__read"]["description"] == TOOLS[0]["function"]["description"]
    [user] = api_messages(request)
    assert [b["text"] for b in user["content"] if b["type"] == "text"][:2] == [
        "[Sat 2026-11-21 10:00 UTC] check the notes file", f"what do my notes say? {directive}"]
    assert "You are a personal assistant running inside OpenClaw." in json.dumps(request.body["system"])

    # OpenClaw's follow-up: the call (ids sanitized), its result, one more user message.
    mock_api.reset()
    follow_up = openclaw_body("thanks")
    follow_up["messages"][3:] = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": sanitized(call_id), "type": "function",
             "function": {"name": "read", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": sanitized(call_id), "content": "- buy milk"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]
    events = await streamed(daemon, follow_up)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    assert text == "MOCK REPLY to: thanks"
    [request] = mock_api.requests
    assert [m["role"] for m in api_messages(request)] == ["user", "assistant", "user"]
    _, assistant, user = api_messages(request)
    assert assistant["content"] == [{"type": "tool_use", "id": call_id, "name": "mcp__client__read",
                                     "input": {"path": "notes.md", "tags": ["a"]}}]
    assert user["content"][0] == {"type": "tool_result", "tool_use_id": call_id,
                                  "content": [{"type": "text", "text": "- buy milk"}]}
    assert user["content"][1] == {"type": "text", "text": "thanks"}
    read = {t["name"]: t for t in request.body["tools"]}["mcp__client__read"]
    assert read["input_schema"] == SCHEMA_FEATURES


@pytest_twisted.ensureDeferred
async def test_tool_call_without_streaming(daemon, mock_api):
    directive = calls_directive(("exec", {"arg": "ls"}))
    body = await completed(daemon, openclaw_body(f"list files {directive}", stream=False))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "exec", "arguments": '{"arg": "ls"}'}
    await settled(daemon)
    assert len(mock_api.requests) == 1


@pytest_twisted.ensureDeferred
async def test_two_parallel_tool_calls_keep_their_index(daemon, mock_api):
    directive = calls_directive(("read", {"path": "a"}), ("web_search", {"arg": "b"}))
    events = await streamed(daemon, openclaw_body(f"both {directive}"))
    calls = [tc for c in events[:-1] if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    by_index: dict[int, str] = {}
    names = {}
    for tc in calls:
        by_index[tc["index"]] = by_index.get(tc["index"], "") + tc["function"]["arguments"]
        if "id" in tc:
            names[tc["index"]] = tc["function"]["name"]
    assert names == {0: "read", 1: "web_search"}
    assert json.loads(by_index[0]) == {"path": "a"} and json.loads(by_index[1]) == {"arg": "b"}

    body = await completed(daemon, openclaw_body(f"both {directive}", stream=False))
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["read", "web_search"]
    assert len({c["id"] for c in calls}) == 2


@pytest_twisted.ensureDeferred
async def test_tool_choice_none_and_required(daemon, mock_api):
    body = await completed(daemon, openclaw_body("just talk", stream=False, tool_choice="none"))
    assert body["choices"][0]["message"]["content"] == "MOCK REPLY to: just talk"
    [request] = mock_api.requests
    assert not request.body.get("tools")

    mock_api.reset()
    await completed(daemon, openclaw_body("use one", stream=False, tool_choice="required"))
    [request] = mock_api.requests
    assert "You must call at least one of the provided tools" in json.dumps(request.body["system"])
    assert len(request.body["tools"]) == len(TOOLS)


@pytest_twisted.ensureDeferred
async def test_images_reach_the_model_as_image_blocks(daemon, mock_api):
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}}
    await completed(daemon, {"model": "claude-haiku-4", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]})
    [user] = api_messages(mock_api.requests[0])
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}} \
        in user["content"]

    # After a tool message, as OpenClaw sends an image a tool read.
    mock_api.reset()
    body = openclaw_body("", stream=False)
    body["messages"][2:] = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "callabc", "type": "function", "function": {"name": "image", "arguments": '{"arg":"x"}'}}]},
        {"role": "tool", "tool_call_id": "callabc", "content": "Read image file [image/png]"},
        {"role": "user", "content": [image]},
    ]
    await completed(daemon, body)
    user = api_messages(mock_api.requests[0])[-1]
    assert [b["type"] for b in user["content"]] == ["tool_result", "image"]

    response = await daemon.post(CHAT, {"model": "claude-haiku-4", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert response.code == 400
    assert (await response.json())["error"]["code"] == "unsupported_image_url"


@pytest_twisted.ensureDeferred
async def test_json_schema_output(daemon, mock_api):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["city", "n"], "additionalProperties": False}
    directive = calls_directive(("StructuredOutput", {"city": "Paris", "n": 3}))
    response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    body = await completed(daemon, {"model": "claude-sonnet-4", "response_format": response_format,
                                    "messages": [{"role": "user", "content": f"json please {directive}"}]})
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Paris", "n": 3}
    assert body["choices"][0]["finish_reason"] == "stop"
    offered = {t["name"]: t for t in mock_api.requests[0].body["tools"]}
    assert offered["StructuredOutput"]["input_schema"] == schema

    events = await streamed(daemon, {"model": "claude-sonnet-4", "stream": True, "response_format": response_format,
                                     "messages": [{"role": "user", "content": f"json please {directive}"}]})
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    assert json.loads(content) == {"city": "Paris", "n": 3}


@pytest_twisted.ensureDeferred
async def test_max_tokens_gives_length(daemon, mock_api):
    body = await completed(daemon, {"model": "claude-haiku-4", "max_tokens": 50,
                                    "messages": [{"role": "user", "content": "long [[mock:max_tokens]]"}]})
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"].startswith("MOCK REPLY to: long")
    assert mock_api.requests[0].body["max_tokens"] == 50


@pytest_twisted.ensureDeferred
async def test_stop_string_split_across_deltas(daemon, mock_api):
    directive = '[[mock:text pieces=\'["Hello wo", "rld, ST", "OP and more"]\']]'
    events = await streamed(daemon, {"model": "claude-haiku-4", "stream": True, "stop": ["STOP", "never"],
                                     "messages": [{"role": "user", "content": f"go {directive}"}]})
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    assert content == "Hello world, "
    assert [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"]][-1] == "stop"
    body = await completed(daemon, {"model": "claude-haiku-4", "stop": "STOP",
                                    "messages": [{"role": "user", "content": f"go {directive}"}]})
    assert body["choices"][0]["message"]["content"] == "Hello world, "


@pytest_twisted.ensureDeferred
async def test_reasoning_content(daemon, mock_api):
    events = await streamed(daemon, {"model": "claude-sonnet-4", "stream": True, "reasoning_effort": "high",
                                     "stream_options": {"include_usage": True},
                                     "messages": [{"role": "user", "content": "think [[mock:thinking]]"}]})
    assert events[-2]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0
    deltas = [c["choices"][0]["delta"] for c in events[:-1] if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == THINKING_TEXT
    assert "".join(d.get("content") or "" for d in deltas) == "MOCK REPLY to: think"
    thinking = mock_api.requests[0].body.get("thinking")
    assert thinking and thinking["type"] != "disabled"

    mock_api.reset()
    body = await completed(daemon, {"model": "claude-sonnet-4", "reasoning_effort": "low",
                                    "messages": [{"role": "user", "content": "think [[mock:thinking]]"}]})
    assert body["choices"][0]["message"]["reasoning_content"] == THINKING_TEXT

    mock_api.reset()
    await completed(daemon, {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "plain"}]})
    thinking = mock_api.requests[0].body.get("thinking")
    assert not thinking or thinking["type"] == "disabled"  # off unless asked for


@pytest_twisted.ensureDeferred
async def test_aider_few_shot_history_is_real_turns(daemon, mock_api):
    messages = [{"role": "system", "content": "Act as an expert software developer."}]
    for i in range(3):
        messages += [{"role": "user", "content": f"example question {i}"},
                     {"role": "assistant", "content": f"example answer {i}"}]
    messages.append({"role": "user", "content": "the real question"})
    body = await completed(daemon, {"model": "claude-sonnet-4", "temperature": 0, "messages": messages})
    assert body["choices"][0]["message"]["content"] == "MOCK REPLY to: the real question"
    sent = api_messages(mock_api.requests[0])
    assert [(m["role"], m["content"][0]["text"] if isinstance(m["content"], list) else m["content"])
            for m in sent] == [(m["role"], m["content"]) for m in messages[1:]]



@pytest_twisted.ensureDeferred
async def test_image_urls_go_to_the_api_only_when_enabled(start_daemon, mock_api):
    daemon = start_daemon("--image-urls")
    url = "https://example.com/cat.png"
    await completed(daemon, {"model": "claude-haiku-4", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": url}}]}]})
    [user] = api_messages(mock_api.requests[0])
    assert {"type": "image", "source": {"type": "url", "url": url}} in user["content"]


@pytest_twisted.ensureDeferred
async def test_tool_call_after_a_failed_stream_is_not_lost(daemon, mock_api):
    # The CLI answers a broken stream again without streaming: no stream events, only its
    # record of the message and the permission request show the call.
    spec = json.dumps([{"name": "read", "input": {"path": "x"}}])
    directive = f"[[mock:midstream_error calls='{spec}']]"
    for stream in (False, True):
        mock_api.reset()
        started = reactor.seconds()
        response = await daemon.post(CHAT, openclaw_body(f"read x {directive}", stream=stream))
        assert response.code == 200
        if stream:
            chunks = [c for c in data_events(await response.content())[:-1] if c["choices"]]
            calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
            finish = chunks[-1]["choices"][0]["finish_reason"]
        else:
            choice = (await response.json())["choices"][0]
            calls, finish = choice["message"]["tool_calls"], choice["finish_reason"]
        assert finish == "tool_calls"
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
            ("read", {"path": "x"})]
        assert reactor.seconds() - started < 10  # not the idle timeout
        await settled(daemon)
        assert [r.body.get("stream") for r in mock_api.requests] == [True, False]


@pytest_twisted.ensureDeferred
async def test_a_broken_stream_answered_anew_is_never_passed_off_as_complete(daemon, mock_api):
    # The API's stream breaks after some text; the CLI's retry (not streamed) answers anew.
    body = {"model": "claude-sonnet-4",
            "messages": [{"role": "user", "content": "tell me [[mock:midstream_error]]"}]}
    whole = await completed(daemon, body)
    assert whole["choices"][0]["message"]["content"].startswith("MOCK REPLY to: tell me")
    assert whole["choices"][0]["finish_reason"] == "stop"
    await settled(daemon)

    chunks = await streamed(daemon, {**body, "stream": True})
    assert chunks[-1] == "[DONE]"
    sent = "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks[:-1] if c.get("choices"))
    assert sent.startswith("PARTIAL")  # already on the wire when the stream broke
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1] if c.get("choices"))
    assert chunks[-2]["error"]["code"] == "stream_interrupted"
