"""
The client's function tools: validation, names and ids on both sides, and the
MCP server the proxy answers for (messages taken from a real CLI 2.1.330 run).
"""

import copy
import re

import pytest

from claude_proxy.errors import APIError
from claude_proxy.events import ControlRequest, parse_line
from claude_proxy.openai_chat.parse import parse_tools
from claude_proxy.openai_content import parse_tool_choice
from claude_proxy.tools import (
    MCP_PROTOCOL_VERSION, Tool, ToolChoice, anthropic_tool_id, client_tool_name, initialize_request,
    mcp_answer, model_tool_name, openai_call_id,
)

from tests.fakes import sample_lines

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}


def function(name="get_weather", **fields):
    return {"type": "function", "function": {"name": name, **fields}}


WEATHER = function(description="Weather by city.", parameters=WEATHER_SCHEMA)
TOOLS = parse_tools([WEATHER, function("exec")])


def refused(call, *args):
    with pytest.raises(APIError) as caught:
        call(*args)
    assert caught.value.status == 400
    return caught.value.param


def cli_mcp_messages():
    """The JSON-RPC messages the real CLI sent to the client's MCP server."""
    found = map(parse_line, sample_lines("cli-2.1.330/tool-calls-held.jsonl"))
    return [e.request["message"] for e in found
            if isinstance(e, ControlRequest) and e.subtype == "mcp_message"]


# -- parse_tools


def test_no_tools():
    assert parse_tools(None) == parse_tools([]) == ()


def test_a_function_tool():
    assert parse_tools([WEATHER]) == (Tool("get_weather", "Weather by city.", WEATHER_SCHEMA),)


def test_type_defaults_to_function_and_description_to_empty():
    (tool,) = parse_tools([{"function": {"name": "ping", "parameters": WEATHER_SCHEMA}}])
    assert (tool.name, tool.description) == ("ping", "")


def test_missing_parameters_become_an_empty_object_schema():
    (tool,) = parse_tools([function("ping")])
    assert tool.parameters == {"type": "object", "properties": {}}


def test_schema_without_type_becomes_an_object_schema():
    schema = {"properties": {"a": {"type": "integer"}}, "required": ["a"]}
    original = copy.deepcopy(schema)
    (tool,) = parse_tools([function(parameters=schema)])
    assert tool.parameters == {"type": "object", **original}
    assert schema == original  # the client's dict is not modified


def test_schema_is_passed_through_unchanged():
    schema = {
        "type": "object",
        "properties": {
            "mode": {"const": "fast"},
            "target": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/point"}]},
            "tags": {"type": "object", "patternProperties": {"^x-": {"type": "string"}},
                     "additionalProperties": False},
        },
        "$defs": {"point": {"type": "array", "items": {"type": "number"}, "minItems": 2}},
        "$schema": "https://json-schema.org/draft/2020-12/schema",
    }
    (tool,) = parse_tools([function(parameters=copy.deepcopy(schema))])
    assert tool.parameters == schema


@pytest.mark.parametrize("name", ["a", "A" * 64, "get-weather_2", "_"])
def test_valid_names(name):
    assert parse_tools([function(name)])[0].name == name


@pytest.mark.parametrize("tools, param", [
    ("get_weather", "tools"),
    ({"type": "function"}, "tools"),
    (["get_weather"], "tools[0]"),
    ([{"type": "code_interpreter"}], "tools[0]"),
    ([{"type": "custom", "custom": {"name": "x"}}], "tools[0]"),
    ([{"type": "function"}], "tools[0].function"),
    ([{"type": "function", "function": "get_weather"}], "tools[0].function"),
    ([function(None)], "tools[0].function.name"),
    ([function("")], "tools[0].function.name"),
    ([function("A" * 65)], "tools[0].function.name"),
    ([function("get weather")], "tools[0].function.name"),
    ([function("get.weather")], "tools[0].function.name"),
    ([function("wetter\u00e9")], "tools[0].function.name"),
    ([function("ok\n")], "tools[0].function.name"),
    ([WEATHER, function("get_weather")], "tools[1]"),
    ([function(description=["x"])], "tools[0].function.description"),
    ([function(parameters="object")], "tools[0].function.parameters"),
    ([function(parameters=[])], "tools[0].function.parameters"),
])
def test_invalid_tools(tools, param):
    assert refused(parse_tools, tools) == param


# -- parse_tool_choice


@pytest.mark.parametrize("value, expected", [
    (None, ToolChoice("auto")),
    ("auto", ToolChoice("auto")),
    ("none", ToolChoice("none")),
    ("required", ToolChoice("required")),
    ({"type": "function", "function": {"name": "exec"}}, ToolChoice("function", "exec")),
])
def test_tool_choice(value, expected):
    assert parse_tool_choice(value, TOOLS) == expected


@pytest.mark.parametrize("value", [
    "any",
    "",
    5,
    {"type": "function", "function": {"name": "rm_rf"}},
    {"type": "function", "function": {}},
    {"type": "function"},
    {"type": "tool", "function": {"name": "exec"}},
])
def test_bad_tool_choice(value):
    assert refused(parse_tool_choice, value, TOOLS) == "tool_choice"


def test_named_tool_choice_needs_tools():
    assert refused(parse_tool_choice, {"type": "function", "function": {"name": "exec"}},
                   ()) == "tool_choice"


def test_tool_choice_with_a_non_string_name_is_a_400():
    assert refused(parse_tool_choice, {"type": "function", "function": {"name": ["exec"]}},
                   TOOLS) == "tool_choice"


@pytest.mark.parametrize("choice, instruction", [
    (ToolChoice("auto"), None),
    (ToolChoice("none"), "Do not call any tool in this reply; answer in text."),
    (ToolChoice("required"), "You must call at least one of the provided tools in this reply."),
    (ToolChoice("function", "exec"), "You must call the tool mcp__client__exec in this reply."),
])
def test_tool_choice_instruction(choice, instruction):
    assert choice.instruction() == instruction


# -- names and ids


def test_tool_names_round_trip():
    assert model_tool_name("get_weather") == "mcp__client__get_weather"
    assert client_tool_name(model_tool_name("get_weather")) == "get_weather"


@pytest.mark.parametrize("name", ["StructuredOutput", "Bash", "mcp__other__get_weather",
                                  "mcp__client_get_weather", "client__get_weather"])
def test_tools_not_the_clients_have_no_client_name(name):
    assert client_tool_name(name) is None


@pytest.mark.parametrize("call_id", ["call_ab12", "toolu_01AbC-xyz", "x", "a" * 128])
def test_valid_tool_ids_are_kept(call_id):
    assert anthropic_tool_id(call_id) == call_id


@pytest.mark.parametrize("call_id, readable", [
    ("call.1:2", "call_1_2_"),
    ("functions.exec:0", "functions_exec_0_"),
    ("id with spaces/é", "id_with_spaces___"),
    ("b" * 129, "b" * 100 + "_"),
])
def test_other_tool_ids_are_sanitised(call_id, readable):
    cleaned = anthropic_tool_id(call_id)
    assert cleaned.startswith(readable) and len(cleaned) == len(readable) + 12
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", cleaned)
    assert anthropic_tool_id(call_id) == cleaned  # the same for both ends of a pair


def test_ids_that_clean_up_alike_stay_apart():
    assert len({anthropic_tool_id(i) for i in ("call.1", "call:1", "call 1")}) == 3


@pytest.mark.parametrize("tool_use_id, expected", [
    ("toolu_mock_0001_0", "calltoolumock00010"),
    ("toolu_01A-b_C", "calltoolu01AbC"),
])
def test_openai_call_ids_are_letters_and_digits(tool_use_id, expected):
    assert openai_call_id(tool_use_id) == expected
    assert openai_call_id(tool_use_id) == openai_call_id(tool_use_id)
    assert re.fullmatch(r"call[A-Za-z0-9]+", expected)


def test_openai_call_ids_survive_openclaw_and_anthropic():
    # OpenClaw strips all but letters and digits; the API takes the result unchanged.
    call_id = openai_call_id("toolu_01XyZ")
    assert re.sub(r"[^A-Za-z0-9]", "", call_id) == call_id
    assert anthropic_tool_id(call_id) == call_id


# -- the MCP server


def test_initialize_request_registers_the_tools():
    assert initialize_request(TOOLS) == {
        "type": "control_request",
        "request_id": "proxy-initialize",
        "request": {
            "subtype": "initialize",
            "sdkMcpServers": ["client"],
            "sdkMcpServerManifests": {"client": {
                "initializeResult": {"protocolVersion": MCP_PROTOCOL_VERSION,
                                     "capabilities": {"tools": {}},
                                     "serverInfo": {"name": "claude-proxy", "version": "1"}},
                "toolsListResult": {"tools": [
                    {"name": "get_weather", "description": "Weather by city.",
                     "inputSchema": WEATHER_SCHEMA},
                    {"name": "exec", "description": "",
                     "inputSchema": {"type": "object", "properties": {}}},
                ]},
            }},
        },
    }


def test_the_protocol_version_is_the_one_the_cli_asks_for():
    initialize = cli_mcp_messages()[0]
    assert initialize["params"]["protocolVersion"] == MCP_PROTOCOL_VERSION


def test_mcp_conversation_of_a_real_cli():
    initialize, initialized, tools_list = cli_mcp_messages()
    assert mcp_answer(TOOLS, initialize) == {"jsonrpc": "2.0", "id": 0, "result": {
        "protocolVersion": MCP_PROTOCOL_VERSION, "capabilities": {"tools": {}},
        "serverInfo": {"name": "claude-proxy", "version": "1"}}}
    assert mcp_answer(TOOLS, initialized) == {"jsonrpc": "2.0", "result": {}}
    assert mcp_answer(TOOLS, tools_list) == {"jsonrpc": "2.0", "id": 1, "result": {
        "tools": [t.mcp() for t in TOOLS]}}


@pytest.mark.parametrize("params, version", [
    ({"protocolVersion": "2025-06-18"}, "2025-06-18"),
    ({}, MCP_PROTOCOL_VERSION),
    (None, MCP_PROTOCOL_VERSION),
])
def test_initialize_echoes_the_requested_protocol_version(params, version):
    answer = mcp_answer(TOOLS, {"jsonrpc": "2.0", "id": 7, "method": "initialize",
                                "params": params})
    assert (answer["id"], answer["result"]["protocolVersion"]) == (7, version)


def test_tool_calls_are_refused_not_run():
    answer = mcp_answer(TOOLS, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                "params": {"name": "exec", "arguments": {"cmd": "rm -rf /"}}})
    assert answer["id"] == 3
    assert answer["result"]["isError"] is True
    assert [c["type"] for c in answer["result"]["content"]] == ["text"]


def test_unknown_method_is_a_json_rpc_error():
    answer = mcp_answer(TOOLS, {"jsonrpc": "2.0", "id": "x9", "method": "resources/list"})
    assert answer["id"] == "x9" and "result" not in answer
    assert answer["error"]["code"] == -32601
    assert "resources/list" in answer["error"]["message"]
