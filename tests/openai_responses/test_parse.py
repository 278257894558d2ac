"""The Responses request parser: wire requests → the neutral request, pure."""

import base64
import json

import pytest

from claude_proxy.errors import APIError
from claude_proxy.plan import cold_settings
from claude_proxy.openai_responses.parse import (
    Context, encrypted_reasoning, ignored_params, namespaced_name, parse_responses_request,
    thinking_block,
)
from claude_proxy.tools import ToolChoice

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cf00000301010018dd8db00000000049454e44ae426082")).decode()


def parse(**body):
    return parse_responses_request({"model": "claude-sonnet-4", "input": "hi", **body})


def refused(param, **body):
    with pytest.raises(APIError) as caught:
        parse(**body)
    assert caught.value.status == 400
    return caught.value


def test_string_input_and_instructions():
    parsed = parse(instructions="be brief")
    conversation = parsed.request.conversation
    assert conversation.system == "be brief"
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", ({"type": "text", "text": "hi"},))]
    assert parsed.store is True and parsed.request.effort is None and not parsed.request.stream
    # instructions are not part of what a continuing response replays
    assert parsed.context == Context((), (("user", ({"type": "text", "text": "hi"},)),))


def test_items_as_codex_sends_them():
    parsed = parse(input=[
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "d1"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "u1"}]},
        {"role": "system", "content": "s1"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a1"}]},
        {"role": "user", "content": [
            "plain", {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]},
    ])
    conversation = parsed.request.conversation
    assert conversation.system == "d1\n\ns1"
    assert [m.role for m in conversation.messages] == ["user", "assistant", "user"]
    last = conversation.messages[-1].content
    assert last[0] == {"type": "text", "text": "plain"}
    assert last[1]["type"] == "image" and last[1]["source"]["media_type"] == "image/png"


def test_function_call_round_trip_items():
    parsed = parse(
        tools=[{"type": "function", "name": "exec_command", "strict": False,
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}],
        input=[
            {"role": "user", "content": "run it"},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command",
             "arguments": "{\"cmd\": \"ls\"}", "id": "fc_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
        ])
    user, assistant, result = parsed.request.conversation.messages
    assert assistant.content == ({"type": "tool_use", "id": "call_1",
                                  "name": "mcp__client__exec_command", "input": {"cmd": "ls"}},)
    assert result.content == ({"type": "tool_result", "tool_use_id": "call_1",
                               "content": [{"type": "text", "text": "a.txt"}]},)
    [tool] = parsed.request.tools
    assert tool.name == "exec_command" and tool.parameters["properties"]["cmd"]


def test_function_call_output_as_content_list():
    parsed = parse(tools=[{"type": "function", "name": "shot"}], input=[
        {"role": "user", "content": "look"},
        {"type": "function_call", "call_id": "c", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text", "text": "here"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])
    [result] = parsed.request.conversation.last.content
    assert [b["type"] for b in result["content"]] == ["text", "image"]


def test_namespace_tools_are_flattened_and_named_back():
    parsed = parse(tools=[
        {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
         "tools": [{"type": "function", "name": "spawn_agent", "description": "Start one.",
                    "parameters": {"type": "object", "properties": {}}}]},
        {"type": "web_search", "external_web_access": False},
        {"type": "file_search"},
        {"type": "web_search"},
    ], input=[
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "namespace": "multi_agent_v1",
         "name": "spawn_agent", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ])
    [tool] = parsed.request.tools
    assert tool.name == "multi_agent_v1__spawn_agent"
    assert tool.description == "(multi_agent_v1: Sub-agents.)\nStart one."
    assert parsed.names == {"multi_agent_v1__spawn_agent": ("multi_agent_v1", "spawn_agent")}
    assert parsed.left_out == ("web_search", "file_search")
    assert parsed.request.conversation.messages[1].content[0]["name"] == \
        "mcp__client__multi_agent_v1__spawn_agent"


def test_namespaced_names_stay_valid_and_distinct():
    long = namespaced_name("n" * 40, "f" * 40)
    assert len(long) <= 64 and long != namespaced_name("n" * 40, "f" * 39 + "g")
    assert namespaced_name("a.b", "c") != namespaced_name("a_b", "c")
    assert namespaced_name("a.b", "c").replace("_", "").isalnum()


def test_reasoning_effort_summary_and_include():
    assert parse().request.effort is None
    assert parse(reasoning=None).request.effort is None
    assert parse(reasoning={"summary": "auto"}).request.effort == "medium"
    assert parse(reasoning={"effort": "minimal"}).request.effort == "low"
    assert parse(reasoning={"effort": "none"}).request.effort is None
    assert parse(reasoning={"effort": "high", "summary": "detailed"}).summary is True
    assert parse(reasoning={"effort": "high"}).summary is False
    assert parse(include=["reasoning.encrypted_content"]).encrypted is True
    assert parse(include=["message.output_text.logprobs"]).encrypted is False
    assert refused("reasoning.effort", reasoning={"effort": "max"}).param == "reasoning.effort"
    assert refused("reasoning.summary", reasoning={"summary": "x"}).param == "reasoning.summary"


def test_encrypted_reasoning_round_trips_into_a_signed_thinking_block():
    encrypted = encrypted_reasoning("I think", "sig==")
    assert thinking_block(encrypted) == {"type": "thinking", "thinking": "I think",
                                         "signature": "sig=="}
    assert thinking_block("gAAAAB-openai-own") is None and thinking_block(None) is None
    # A full model id: with an alias the CLI drops the replayed block (request.settled).
    parsed = parse(model="claude-sonnet-5-5", reasoning={"effort": "low"},
                   tools=[{"type": "function", "name": "f"}], input=[
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": encrypted},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "r"}])
    assistant = parsed.request.conversation.messages[1]
    assert [b["type"] for b in assistant.content] == ["thinking", "tool_use"]
    # the loop is signed: thinking stays on, also when replayed
    assert cold_settings(parsed.request, "claude-sonnet-5-5").effort == "low"


def test_unsigned_tool_loop_turns_thinking_off_and_foreign_reasoning_is_skipped():
    parsed = parse(reasoning={"effort": "low"}, tools=[{"type": "function", "name": "f"}], input=[
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "r"}])
    assert [b["type"] for b in parsed.request.conversation.messages[1].content] == ["tool_use"]
    assert parsed.request.effort == "low"  # as asked (a live session keeps it)
    assert cold_settings(parsed.request, "claude-sonnet-5-5").effort is None


def test_thinking_is_not_replayed_when_off():
    parsed = parse(input=[
        {"role": "user", "content": "q"},
        {"type": "reasoning", "summary": [], "encrypted_content": encrypted_reasoning("t", "s")},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "more"}])
    assert parsed.request.conversation.messages[1].content == ({"type": "text", "text": "a"},)


def test_output_format_limits_and_tool_choice():
    parsed = parse(text={"format": {"type": "json_schema", "name": "x", "strict": True,
                                    "schema": {"type": "object"}}, "verbosity": "low"},
                   max_output_tokens=50, stream=True,
                   tools=[{"type": "function", "name": "f"}],
                   tool_choice={"type": "function", "name": "f"})
    assert parsed.request.output.schema == {"type": "object"}
    assert parsed.request.max_tokens == 50 and parsed.request.stream
    assert parsed.request.tool_choice == ToolChoice("function", "f")
    assert parse(text={"format": {"type": "json_object"}}).request.output.schema == {"type": "object"}
    assert parse(text={"format": {"type": "text"}}).request.output is None
    assert parse(tool_choice="required", tools=[{"type": "function", "name": "f"}]
                 ).request.tool_choice == ToolChoice("required")
    assert refused("max_output_tokens", max_output_tokens=0).param == "max_output_tokens"
    assert refused("text.format.schema", text={"format": {"type": "json_schema"}}
                   ).param == "text.format.schema"


def test_refusals_and_ignored():
    assert refused("background", background=True).code == "unsupported_parameter"
    assert refused("conversation", conversation="conv_1").code == "unsupported_parameter"
    assert refused("prompt", prompt={"id": "pmpt_1"}).param == "prompt"
    assert refused("input", input=[{"type": "item_reference", "id": "msg_1"}]).code == \
        "unsupported_parameter"
    assert refused("input", input=[{"type": "computer_call_output"}]).param == "input[0].type"
    assert refused("input", input=[{"role": "tool", "content": "x"}]).param == "input[0].role"
    assert refused("input", input=5).param == "input"
    assert refused("tools", tools=[{"type": "function", "name": "bad name"}]).param == \
        "tools[0].name"
    assert refused("input", input=[{"role": "user", "content": [
        {"type": "input_file", "file_id": "f"}]}]).code == "unsupported_content"
    assert refused("store", store="yes").param == "store"
    assert refused("input", input=[{"role": ["user"]}]).param == "input[0].role"
    assert refused("input", input=[{"role": "user", "content": [{"type": []}]}]).param == \
        "input[0].content[0].type"
    assert refused("reasoning", reasoning={"summary": {}}).param == "reasoning.summary"
    assert refused("reasoning", reasoning={"effort": []}).param == "reasoning.effort"
    assert refused("input", input=[{"role": "assistant", "content": "last"}]).param == "input"
    body = {"temperature": 0.2, "top_p": 1, "user": "u", "safety_identifier": "s",
            "prompt_cache_key": "k", "client_metadata": {"a": "b"}, "metadata": {},
            "service_tier": "auto", "truncation": "auto", "parallel_tool_calls": True}
    assert set(ignored_params(body)) == set(body)
    assert parse(**body, background=False).request.model.id == "claude-sonnet-4"


def test_previous_context_comes_first():
    before = Context(("from developer",), (
        ("user", ({"type": "text", "text": "first"},)),
        ("assistant", ({"type": "text", "text": "answer"},))))
    parsed = parse_responses_request(
        {"model": "claude-sonnet-4", "input": "second", "instructions": "now"}, before)
    conversation = parsed.request.conversation
    assert conversation.system == "now\n\nfrom developer"
    assert [m.content[0]["text"] for m in conversation.messages] == ["first", "answer", "second"]
    assert parsed.context.turns[:2] == before.turns


def test_encrypted_content_is_base64_json():
    value = json.loads(base64.b64decode(encrypted_reasoning("é", "s")))
    assert value == {"thinking": "é", "signature": "s"}
