"""
OpenAI chat messages → the Anthropic conversation: system prompt, merged
turns, tool_use / tool_result blocks, images, and the 400s for what cannot be.
"""

import json

import pytest

from claude_proxy.conversation import Conversation, Message
from claude_proxy.openai_chat.parse import parse_conversation
from claude_proxy.errors import APIError

# A real 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
IMAGE_PART = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}}
IMAGE_BLOCK = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                           "data": PNG_B64}}


def text(t):
    return {"type": "text", "text": t}


def user(content="hi"):
    return {"role": "user", "content": content}


def call(call_id, name="get_weather", arguments='{"city": "Paris"}'):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def assistant(content=None, *calls):
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def tool(call_id, content="sunny"):
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def tool_use(call_id, name="get_weather", arguments=None):
    return {"type": "tool_use", "id": call_id, "name": f"mcp__client__{name}",
            "input": {"city": "Paris"} if arguments is None else arguments}


def tool_result(call_id, *content):
    return {"type": "tool_result", "tool_use_id": call_id, "content": list(content)}


def refused(messages):
    with pytest.raises(APIError) as caught:
        parse_conversation(messages)
    assert caught.value.status == 400
    return caught.value


def param_of(messages):
    return refused(messages).param


def tool_round(*after):
    """user, an assistant calling get_weather as call_1, then the given messages."""
    return parse_conversation([user("weather?"), assistant(None, call("call_1")), *after])


# -- system prompt and merging


def test_system_and_developer_messages_are_joined_in_order():
    conversation = parse_conversation([
        {"role": "system", "content": "S1"},
        user("hi"),
        {"role": "developer", "content": [{"type": "text", "text": "S2"}, "S3"]},
        {"role": "system", "content": ""},
    ])
    assert conversation.system == "S1\n\nS2\nS3"
    assert conversation.messages == (Message("user", (text("hi"),)),)


def test_system_messages_hold_text_only():
    error = refused([{"role": "system", "content": [IMAGE_PART]}, user()])
    assert error.param == "messages[0].content[0]"


def test_consecutive_user_messages_are_merged():
    conversation = parse_conversation([
        user("first"),
        user([{"type": "text", "text": "second"}, {"type": "input_text", "text": ""},
              {"type": "input_text", "text": "third"}]),
    ])
    assert conversation.messages == (Message("user", (text("first"), text("second"),
                                                      text("third"))),)


def test_turns_alternate_and_empty_assistant_messages_vanish():
    conversation = parse_conversation([user("a"), assistant("b"), assistant(""), user("c"),
                                       assistant(None), user("d")])
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", (text("a"),)), ("assistant", (text("b"),)), ("user", (text("c"), text("d")))]


def test_assistant_refusals_are_text():
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    conversation = parse_conversation([user(), assistant([refusal]), user()])
    assert conversation.history[1] == Message("assistant", (text("I can't help with that."),))


def test_empty_refusal_adds_no_block():
    refusal = {"type": "refusal", "refusal": ""}
    conversation = parse_conversation([user(), assistant(["ok", refusal]), user()])
    assert conversation.history[1] == Message("assistant", (text("ok"),))


def test_history_and_last():
    conversation = parse_conversation([user("a"), assistant("b"), user("c")])
    assert conversation.history == (Message("user", (text("a"),)),
                                    Message("assistant", (text("b"),)))
    assert conversation.last == Message("user", (text("c"),))


# -- tool calls and results


def test_assistant_tool_calls_become_tool_use_blocks():
    conversation = tool_round(tool("call_1"))
    assert conversation.history[1] == Message("assistant", (tool_use("call_1"),))
    assert conversation.last == Message("user", (tool_result("call_1", text("sunny")),))


def test_assistant_text_comes_before_its_tool_calls():
    conversation = parse_conversation([
        user(), assistant("Let me look.", call("call_1", "exec", '{"cmd": "ls"}'),
                          call("call_2", "ping", "")),
        tool("call_1"), tool("call_2"),
    ])
    assert conversation.history[1].content == (
        text("Let me look."), tool_use("call_1", "exec", {"cmd": "ls"}),
        tool_use("call_2", "ping", {}))


def test_arguments_may_already_be_an_object():
    given = parse_conversation([user(), assistant(None, call("c", arguments={"n": [1]})),
                                tool("c")])
    assert given.history[1].content == (tool_use("c", arguments={"n": [1]}),)


@pytest.mark.parametrize("content, blocks", [
    ("72F", [text("72F")]),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], [text("a"), text("b")]),
    ("", [text("(no output)")]),
    (None, [text("(no output)")]),
    ([], [text("(no output)")]),
])
def test_tool_message_content(content, blocks):
    assert tool_round(tool("call_1", content)).last.content == (tool_result("call_1", *blocks),)


def test_tool_results_lead_the_user_message():
    # A client (OpenClaw does this) put a user message between the two tool messages.
    conversation = parse_conversation([
        user("weather and time?"),
        assistant(None, call("call_1"), call("call_2", "time", "{}")),
        tool("call_1", "sunny"),
        user("hurry"),
        tool("call_2", "noon"),
    ])
    assert conversation.last == Message("user", (
        tool_result("call_1", text("sunny")), tool_result("call_2", text("noon")),
        text("hurry")))


@pytest.mark.parametrize("sent_back, expected", [
    # OpenClaw strips all but letters and digits from the ids it sends back ("call_ab12"
    # comes back as "callab12"), on the assistant's tool_calls and the tool message alike.
    ("callab12", "callab12"),
    # Ids the API would refuse are sanitised the same way on both ends.
    ("functions.get_weather:0", "functions_get_weather_0_"),
])
def test_tool_use_and_tool_result_ids_pair_up(sent_back, expected):
    conversation = parse_conversation([user(), assistant(None, call(sent_back)), tool(sent_back)])
    (use,) = conversation.history[1].content
    (result,) = conversation.last.content
    assert use["id"] == result["tool_use_id"]
    assert use["id"].startswith(expected)


def test_without_tools_the_history_calls_become_text():
    conversation = parse_conversation([user(), assistant(None, call("call_1")), tool("call_1")])
    plain = conversation.tools_as_text()
    assert not plain.uses_tools()
    assert plain.history[1].content[0]["text"].startswith("[called ")
    assert plain.last.content[0]["text"].startswith("[tool result]")
    assert conversation.ends_tool_loop() and plain.messages[0] == conversation.messages[0]


def test_a_tool_loop_with_its_signed_thinking():
    conversation = parse_conversation([user(), assistant(None, call("call_1")), tool("call_1")])
    reply = conversation.messages[1]
    signed = Message("assistant", ({"type": "thinking", "thinking": "t", "signature": "s"},
                                   *reply.content))
    assert not conversation.last_call_signed()
    assert Conversation(conversation.system, (conversation.messages[0], signed,
                                              conversation.messages[2])).last_call_signed()


def test_uses_tools():
    assert tool_round(tool("call_1")).uses_tools()
    assert not parse_conversation([user("a"), assistant("b"), user("c")]).uses_tools()


@pytest.mark.parametrize("calls, param", [
    ([call("c", arguments="{not json")], "messages[1].tool_calls[0].function.arguments"),
    ([call("c"), call("d", arguments="[1, 2]")], "messages[1].tool_calls[1].function.arguments"),
    ([call("c", arguments="42")], "messages[1].tool_calls[0].function.arguments"),
    ([{"type": "function", "function": {"name": "x", "arguments": "{}"}}],
     "messages[1].tool_calls[0].id"),
    ([{"id": "c", "function": {"arguments": "{}"}}], "messages[1].tool_calls[0].function.name"),
    (["c"], "messages[1].tool_calls[0]"),
    ({"id": "c"}, "messages[1].tool_calls"),
])
def test_bad_tool_calls(calls, param):
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    assert param_of([user(), message, tool("c")]) == param


def test_tool_message_needs_its_call_id():
    assert param_of([user(), assistant(None, call("c")), {"role": "tool", "content": "x"}]) \
        == "messages[2].tool_call_id"


# -- legacy functions


def test_legacy_function_call_and_function_result():
    conversation = parse_conversation([
        user(),
        {"role": "assistant", "content": None,
         "function_call": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ])
    # No id to pair a tool_result with, so both sides are text (a lone tool_use is refused by the API).
    assert conversation.history[1].content == (
        text('[called get_weather with {"city": "Paris"}]'),)
    assert not conversation.uses_tools()
    assert conversation.last == Message("user", (text("[get_weather returned]\nsunny"),))


# -- images


def test_images_in_user_messages():
    conversation = parse_conversation([user([{"type": "text", "text": "what is this?"},
                                             IMAGE_PART])])
    assert conversation.last.content == (text("what is this?"), IMAGE_BLOCK)


def test_images_in_tool_results():
    conversation = tool_round(tool("call_1", [{"type": "text", "text": "screenshot:"}, IMAGE_PART]))
    assert conversation.last.content == (tool_result("call_1", text("screenshot:"), IMAGE_BLOCK),)


def test_images_in_assistant_messages_are_refused():
    assert param_of([user(), assistant([IMAGE_PART]), user()]) == "messages[1].content[0]"


REMOTE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def test_remote_image_urls_are_refused_by_default():
    error = refused([user([REMOTE_PART])])
    assert (error.param, error.code) == ("messages[0].content[0].image_url.url",
                                         "unsupported_image_url")


def test_remote_image_urls_go_on_when_allowed():
    conversation = parse_conversation(
        [user([REMOTE_PART]), assistant(None, call("c")), tool("c", [REMOTE_PART])],
        image_urls=True)
    url_block = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    assert conversation.history[0].content == (url_block,)
    assert conversation.last.content == (tool_result("c", url_block),)


def test_bad_image_is_refused_naming_the_part():
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}
    error = refused([user([{"type": "text", "text": "x"}, part])])
    assert error.param == "messages[0].content[1].image_url.url"
    assert error.code == "unsupported_image"


# -- what is refused


@pytest.mark.parametrize("messages, param", [
    (None, "messages"),
    ([], "messages"),
    ({"role": "user", "content": "hi"}, "messages"),
    (["hi"], "messages[0]"),
    ([{"role": "model", "content": "hi"}], "messages[0].role"),
    ([{"content": "hi"}], "messages[0].role"),
    ([user(None)], "messages[0].content"),
    ([user(7)], "messages[0].content"),
    ([user([7])], "messages[0].content[0]"),
    ([user([{"type": "text", "text": 7}])], "messages[0].content[0].text"),
    ([user([{"type": "video", "url": "x"}])], "messages[0].content[0]"),
    ([{"role": "system", "content": "only a system prompt"}], "messages"),
    ([user(), assistant("the last word")], "messages"),
    ([user(), assistant(None, call("c"))], "messages"),
])
def test_refused(messages, param):
    assert param_of(messages) == param


@pytest.mark.parametrize("kind", ["input_audio", "file", "input_file"])
def test_unsupported_content_parts(kind):
    error = refused([user([{"type": kind}])])
    assert (error.param, error.code) == ("messages[0].content[0]", "unsupported_content")
