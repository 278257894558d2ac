"""The Messages parser: Anthropic request bodies → the neutral request."""

import base64

import pytest

from claude_proxy.anthropic_messages.parse import ignored_params, parse_messages_request
from claude_proxy.errors import APIError
from claude_proxy.plan import cold_settings

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cf00000301010018dd8db00000000049454e44ae426082")).decode()
WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def body(**over):
    base = {"model": "claude-sonnet-4", "max_tokens": 1024,
            "messages": [{"role": "user", "content": "hi"}]}
    base.update(over)
    return base


def parse(**over):
    return parse_messages_request(body(**over)).request


def refused(status=400, **over):
    with pytest.raises(APIError) as e:
        parse_messages_request(body(**over))
    assert e.value.status == status
    return e.value


def test_plain_request():
    request = parse(stream=True, max_tokens=300)
    assert request.model.id == "claude-sonnet-4" and request.model.cli_model == "sonnet"
    assert request.stream and request.max_tokens == 300
    assert [(m.role, m.content) for m in request.conversation.messages] == [
        ("user", ({"type": "text", "text": "hi"},))]
    assert request.effort is None and request.tools == () and request.stop == ()


def test_full_ids_and_aliases_resolve():
    assert parse(model="claude-opus-4-1-20250805").model.cli_model == "claude-opus-4-1-20250805"
    assert parse(model="haiku").model.cli_model == "haiku"
    error = refused(404, model="gpt-4o")
    assert error.code == "model_not_found"


def test_max_tokens_is_required():
    with pytest.raises(APIError) as e:
        parse_messages_request({"model": "sonnet", "messages": [{"role": "user", "content": "x"}]})
    assert e.value.status == 400 and e.value.param == "max_tokens"
    refused(max_tokens=0)
    refused(max_tokens="100")
    # count_tokens takes the same body without it.
    counted = parse_messages_request({"model": "sonnet", "messages": [{"role": "user", "content": "x"}]},
                                     counting=True)
    assert counted.request.max_tokens is None


def test_system_string_blocks_and_system_messages():
    request = parse(
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "system", "content": "Also kind."},
                  {"role": "user", "content": "hi"}])
    assert request.system == "Be brief.\n\nAlso kind."
    assert parse(system="Plain.").system == "Plain."
    refused(system=[{"type": "image", "source": {}}])


def test_blocks_lose_cache_control_and_turns_merge():
    request = parse(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "b", "citations": []}]}])
    [message] = request.conversation.messages
    assert message.content == ({"type": "text", "text": "a"}, {"type": "text", "text": "b"})


def test_images_base64_and_url():
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}
    [message] = parse(messages=[{"role": "user", "content": [block]}]).conversation.messages
    assert message.content[0]["source"]["media_type"] == "image/png"  # the bytes win
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    error = refused(messages=[{"role": "user", "content": [url]}])
    assert error.param == "messages[0].content[0].source.url"
    allowed = parse_messages_request(body(messages=[{"role": "user", "content": [url]}]), image_urls=True)
    assert allowed.request.conversation.last.content[0]["source"] == {
        "type": "url", "url": "https://example.com/a.png"}
    refused(messages=[{"role": "assistant", "content": [block]}, {"role": "user", "content": "x"}])


def tool_loop(**assistant_extra):
    thinking = assistant_extra.pop("thinking", [])
    return [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [
            *thinking,
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True,
             "cache_control": {"type": "ephemeral"},
             "content": [{"type": "text", "text": "down"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                      "data": PNG}}]},
            {"type": "text", "text": "try again"}]},
    ]


def test_tool_round_trip_blocks():
    request = parse(tools=[WEATHER], messages=tool_loop())
    user, assistant, result = request.conversation.messages
    assert assistant.content[1] == {"type": "tool_use", "id": "toolu_01",
                                    "name": "mcp__client__weather", "input": {"city": "Paris"}}
    first = result.content[0]
    assert first["type"] == "tool_result" and first["tool_use_id"] == "toolu_01"
    assert first["is_error"] is True and "cache_control" not in first
    assert first["content"][0] == {"type": "text", "text": "down"}
    assert first["content"][1]["type"] == "image"
    assert result.content[1] == {"type": "text", "text": "try again"}
    assert [t.name for t in request.tools] == ["weather"]


def test_tool_result_string_and_empty():
    messages = tool_loop()
    messages[2]["content"] = [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]
    [result] = parse(tools=[WEATHER], messages=messages).conversation.last.content
    assert result == {"type": "tool_result", "tool_use_id": "toolu_01",
                      "content": [{"type": "text", "text": "sunny"}]}
    messages[2]["content"] = [{"type": "tool_result", "tool_use_id": "toolu_01"}]
    [result] = parse(tools=[WEATHER], messages=messages).conversation.last.content
    assert result["content"] == [{"type": "text", "text": "(no output)"}]


def test_signed_thinking_keeps_thinking_on_in_a_tool_loop():
    signed = {"type": "thinking", "thinking": "hmm", "signature": "c2ln"}
    on = {"type": "enabled", "budget_tokens": 2048}
    request = parse(model="claude-sonnet-4-5", tools=[WEATHER], thinking=on,
                    messages=tool_loop(thinking=[signed]))
    assert cold_settings(request, request.model.cli_model).effort == "low"
    assert request.conversation.messages[1].content[0] == signed
    # With an alias the CLI drops the replayed block, so a cold replay turns thinking off
    # (a live session keeps it: the request says what was asked).
    request = parse(model="sonnet", tools=[WEATHER], thinking=on, messages=tool_loop(thinking=[signed]))
    assert request.effort == "low" and cold_settings(request, "sonnet").effort is None
    assert cold_settings(request, "claude-sonnet-5-5").effort == "low"  # the alias resolved
    assert parse(model="sonnet", thinking=on).effort == "low"
    # Without it the API would refuse thinking: a cold replay turns it off.
    request = parse(tools=[WEATHER], thinking=on, messages=tool_loop())
    assert cold_settings(request, request.model.cli_model).effort is None
    # An unsigned thinking block is dropped (the API refuses it); redacted thinking is kept.
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    request = parse(tools=[WEATHER], messages=tool_loop(
        thinking=[{"type": "thinking", "thinking": "x"}, redacted]))
    assert request.conversation.messages[1].content[0] == redacted


def test_without_tools_history_calls_become_text():
    request = parse(messages=tool_loop())
    assert not request.conversation.uses_tools()
    assert "[called weather with" in request.conversation.messages[1].content[1]["text"]


def test_server_tools_are_left_out():
    parsed = parse_messages_request(body(tools=[
        WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "custom", "name": "deferred", "input_schema": {"type": "object"},
         "defer_loading": True, "strict": True, "eager_input_streaming": True,
         "cache_control": {"type": "ephemeral"}}]))
    assert [t.name for t in parsed.request.tools] == ["weather", "deferred"]
    assert parsed.left_out == ("web_search_20250305", "bash_20250124")


def test_tool_checks():
    refused(tools=[{"name": "bad name!", "input_schema": {}}])
    refused(tools=[WEATHER, WEATHER])
    refused(tools={"name": "x"})


@pytest.mark.parametrize(("choice", "mode", "name"), [
    ({"type": "auto"}, "auto", None),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", None),
    ({"type": "tool", "name": "weather"}, "function", "weather"),
    ({"type": "none"}, "none", None),
])
def test_tool_choice(choice, mode, name):
    request = parse(tools=[WEATHER], tool_choice=choice)
    assert (request.tool_choice.mode, request.tool_choice.name) == (mode, name)


def test_bad_tool_choice():
    refused(tools=[WEATHER], tool_choice={"type": "tool", "name": "other"})
    refused(tools=[WEATHER], tool_choice={"type": "sometimes"})
    refused(tools=[WEATHER], tool_choice="auto")


@pytest.mark.parametrize(("thinking", "output_config", "effort"), [
    (None, None, None),
    ({"type": "disabled"}, {"effort": "high"}, None),
    (None, {"effort": "high"}, None),
    ({"type": "adaptive", "display": "omitted"}, None, "high"),
    ({"type": "adaptive"}, {"effort": "max"}, "max"),
    ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
    ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
    ({"type": "enabled", "budget_tokens": 31999}, None, "high"),
    ({"type": "enabled", "budget_tokens": 31999}, {"effort": "low"}, "low"),
])
def test_thinking_and_effort(thinking, output_config, effort):
    over = {"thinking": thinking} if thinking else {}
    if output_config:
        over["output_config"] = output_config
    assert parse(**over).effort == effort


def test_bad_thinking():
    refused(thinking={"type": "enabled", "budget_tokens": 100})
    refused(thinking={"type": "enabled"})
    refused(thinking={"type": "sometimes"})
    refused(output_config={"effort": "extreme"})


def test_structured_output():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    format_ = {"type": "json_schema", "schema": schema}
    assert parse(output_config={"format": format_}).output.schema == schema
    assert parse(output_format=format_).output.schema == schema
    assert refused(output_config={"format": {"type": "text"}}).param == "output_config.format.type"
    refused(output_format={"type": "json_schema", "schema": "nope"})


def test_stop_sequences():
    assert parse(stop_sequences=["END", "\n\nHuman:", "a", "b", "c"]).stop == (
        "END", "\n\nHuman:", "a", "b", "c")
    refused(stop_sequences="END")
    refused(stop_sequences=[""])


def test_refusals():
    assert refused(mcp_servers=[{"type": "url", "url": "https://x", "name": "x"}]).param == "mcp_servers"
    refused(messages=[])
    refused(messages=[{"role": "tool", "content": "x"}])
    refused(messages=[{"role": "user", "content": 5}])
    # Prefill: the CLI cannot continue an assistant message.
    refused(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "{"}])
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}
    assert refused(messages=[{"role": "user", "content": [pdf]}]).code == "unsupported_content"
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    refused(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [server]},
                      {"role": "user", "content": "y"}])
    refused(messages=[{"role": "user", "content": [{"type": "thinking", "thinking": "x",
                                                    "signature": "s"}]}])
    refused(stream="yes")
    refused(temperature="hot")
    refused(top_k=1.5)


def test_text_documents_and_search_results_become_text():
    doc = {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                          "data": "buy milk"}}
    found = {"type": "search_result", "source": "https://x", "title": "X",
             "content": [{"type": "text", "text": "result text"}]}
    [message] = parse(messages=[{"role": "user", "content": [doc, found]}]).conversation.messages
    assert message.content == ({"type": "text", "text": "[document: Notes]\nbuy milk"},
                               {"type": "text", "text": "[search result: X (https://x)]\nresult text"})


def test_ignored_params():
    assert ignored_params(body(temperature=0.2, top_k=5, metadata={"user_id": "u"},
                               context_management={}, service_tier="auto")) == (
        "temperature", "top_k", "metadata", "context_management", "service_tier")


ODD = [None, 1, "x", [], {}, [1], {"type": []}, [{"type": ["text"]}], {"type": {"a": 1}}]


@pytest.mark.parametrize("value", ODD)
@pytest.mark.parametrize("key", ["system", "messages", "tools", "tool_choice", "thinking",
                                 "output_config", "output_format", "stop_sequences", "max_tokens",
                                 "content", "role", "block", "source", "tool_result"])
def test_odd_values_are_a_400_never_a_crash(key, value):
    over = {}
    if key == "content":
        over["messages"] = [{"role": "user", "content": value}]
    elif key == "role":
        over["messages"] = [{"role": value, "content": "x"}]
    elif key == "block":
        over["messages"] = [{"role": "user", "content": [value]}]
    elif key == "source":
        over["messages"] = [{"role": "user", "content": [{"type": "image", "source": value}]}]
    elif key == "tool_result":
        over["messages"] = [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": value}]}]
    else:
        over[key] = value
    try:
        parse(**over)
    except APIError as e:
        assert 400 <= e.status < 500
