"""The Chat Completions front door's parser: wire requests → the neutral request."""

import pytest

from claude_proxy.conversation import Message
from claude_proxy.errors import APIError
from claude_proxy.plan import cold_settings
from claude_proxy.openai_chat.parse import ignored_params, include_usage, parse_chat_request


def request(**over):
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    body.update(over)
    return parse_chat_request(body)


def bad(param, **over):
    with pytest.raises(APIError) as caught:
        request(**over)
    assert caught.value.status == 400
    assert caught.value.param == param
    return caught.value


def test_minimal_request():
    chat = request()
    assert chat.model.cli_model == "sonnet"
    assert chat.conversation.messages == (Message("user", ({"type": "text", "text": "hi"},)),)
    assert (chat.system, chat.stream, chat.max_tokens) == ("", False, None)
    assert (chat.tools, chat.output, chat.stop, chat.effort) == ((), None, (), None)


def test_what_real_clients_send_is_accepted():
    body = {
        "model": "claude-sonnet-4",
        "messages": [
            {"role": "system", "content": "S1"},
            {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}], "name": "x"},
        ],
        "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
        "max_completion_tokens": 100, "max_tokens": 5, "user": "u", "metadata": {"a": 1},
        "unknown_key": [1],
    }
    chat = parse_chat_request(body)
    assert chat.system == "S1\n\nS2"
    # Consecutive user messages are one Anthropic user message.
    assert chat.conversation.messages == (
        Message("user", ({"type": "text", "text": "first"}, {"type": "text", "text": "second"})),)
    assert (chat.stream, include_usage(body), chat.max_tokens) == (True, True, 100)
    assert ignored_params(body) == ("temperature", "user", "metadata")


@pytest.mark.parametrize("param, over", [
    ("logprobs", {"logprobs": True}),
    ("top_logprobs", {"top_logprobs": 2}),
    ("audio", {"audio": {"voice": "alloy"}}),
    ("audio", {"modalities": ["text", "audio"]}),
])
def test_what_cannot_be_honoured_is_refused(param, over):
    assert bad(param, **over).code == "unsupported_parameter"


def test_reasoning_effort_maps_to_cli_effort():
    assert request(reasoning_effort="high").effort == "high"
    assert request(reasoning_effort="minimal").effort == "low"
    assert request(reasoning_effort="none").effort is None
    bad("reasoning_effort", reasoning_effort="extreme")


def test_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = request(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert chat.output.schema == schema
    assert request(response_format={"type": "json_object"}).output.schema == {"type": "object"}
    assert request(response_format={"type": "text"}).output is None
    bad("response_format.json_schema.schema", response_format={"type": "json_schema", "json_schema": {}})
    bad("response_format.type", response_format={"type": "xml"})
    huge = {"type": "object", "description": "x" * 70_000}
    bad("response_format.json_schema.schema",
        response_format={"type": "json_schema", "json_schema": {"schema": huge}})


def test_include_usage_needs_stream():
    assert include_usage({"stream_options": {"include_usage": True}}) is False
    with pytest.raises(APIError) as caught:
        include_usage({"stream": True, "stream_options": [1]})
    assert caught.value.param == "stream_options"


def test_assistant_content_null_is_skipped_and_turns_stay_turns():
    chat = request(messages=[
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": None, "annotations": []},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ])
    assert [(m.role, m.content[0]["text"]) for m in chat.conversation.messages] == [
        ("user", "What is 2+2?"), ("assistant", "4"), ("user", "And 3+3?")]


@pytest.mark.parametrize("param, over", [
    ("messages", {"messages": []}),
    ("messages", {"messages": "hi"}),
    ("messages[0]", {"messages": ["hi"]}),
    ("messages[0].role", {"messages": [{"role": "bot", "content": "x"}]}),
    ("messages[0].role", {"messages": [{"role": ["user"], "content": "x"}]}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [{"type": {}}]}]}),
    ("reasoning_effort", {"reasoning_effort": ["high"]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": None}]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": 5}]}),
    ("messages[0].content[0]", {"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
    ("messages[0].content[0].text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    ("messages", {"messages": [{"role": "system", "content": "only system"}]}),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ("messages[0].content[0]", {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
    ("stream", {"stream": "yes"}),
    ("max_tokens", {"max_tokens": 0}),
    ("max_completion_tokens", {"max_completion_tokens": "10"}),
    ("temperature", {"temperature": "hot"}),
    ("n", {"n": 2}),
])
def test_invalid_bodies_name_the_param(param, over):
    bad(param, **over)


def test_remote_images_are_refused_clearly():
    error = bad("messages[0].content[1].image_url.url", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]}])
    assert error.code == "unsupported_image_url"


def test_unknown_model_is_404():
    with pytest.raises(APIError) as caught:
        request(model="gpt-4o")
    assert caught.value.status == 404


TOOL_LOOP = [
    {"role": "user", "content": "read it"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call1", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call1", "content": "text"},
]
READ = [{"type": "function", "function": {"name": "read"}}]


def test_history_tool_calls_become_text_when_no_tools_are_offered():
    chat = request(messages=TOOL_LOOP)
    assert not chat.offers_tools and not chat.conversation.uses_tools()
    assert request(messages=TOOL_LOOP, tools=READ).conversation.uses_tools()


def test_a_cold_replay_turns_thinking_off_inside_a_tool_loop():
    # The API wants the signed thinking block back there, which OpenAI clients drop;
    # a live session has its own, so the request keeps what was asked.
    looped = request(messages=TOOL_LOOP, tools=READ, reasoning_effort="high")
    assert looped.effort == "high" and cold_settings(looped, "claude-sonnet-5-5").effort is None
    first = request(messages=TOOL_LOOP[:1], tools=READ, reasoning_effort="high")
    assert cold_settings(first, "claude-sonnet-5-5").effort == "high"
