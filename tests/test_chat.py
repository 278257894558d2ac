import json

import pytest

from claude_proxy.chat import (
    Turn, chunk, completion, finish_reason, parse_body, parse_chat_request, prompt_text,
)
from claude_proxy.errors import APIError
from claude_proxy.events import Usage


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
    assert chat.turns == (Turn("user", "hi"),)
    assert (chat.system, chat.stream, chat.include_usage, chat.max_tokens) == ("", False, False, None)


def test_what_real_clients_send_is_accepted():
    chat = request(
        messages=[
            {"role": "system", "content": "S1"},
            {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}], "name": "x"},
        ],
        stream=True, stream_options={"include_usage": True}, temperature=0,
        max_completion_tokens=100, max_tokens=5, user="u", metadata={"a": 1}, unknown_key=[1],
    )
    assert chat.system == "S1\n\nS2"
    assert prompt_text(chat.turns) == "first\n\nsecond"
    assert (chat.stream, chat.include_usage, chat.max_tokens) == (True, True, 100)
    assert chat.not_honoured == ()


def test_parameters_not_yet_honoured_are_reported():
    chat = request(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto",
                   stop=None)
    assert chat.not_honoured == ("tools", "tool_choice")


def test_include_usage_needs_stream():
    assert request(stream_options={"include_usage": True}).include_usage is False


def test_assistant_content_null_and_history_transcript():
    chat = request(messages=[
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": None, "annotations": []},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ])
    text = prompt_text(chat.turns)
    assert text.startswith("<conversation_so_far>\n[user]\nWhat is 2+2?")
    assert "[assistant]\n4\n</conversation_so_far>" in text
    assert text.endswith("And 3+3?")


@pytest.mark.parametrize("param, over", [
    ("messages", {"messages": []}),
    ("messages", {"messages": "hi"}),
    ("messages[0]", {"messages": ["hi"]}),
    ("messages[0].role", {"messages": [{"role": "bot", "content": "x"}]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": None}]}),
    ("messages[0].content", {"messages": [{"role": "user", "content": 5}]}),
    ("messages[0].content[0]", {"messages": [{"role": "user", "content": [{"type": "video"}]}]}),
    ("messages[0].content[0].text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
    ("messages", {"messages": [{"role": "system", "content": "only system"}]}),
    ("messages", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ("stream", {"stream": "yes"}),
    ("stream_options", {"stream_options": [1]}),
    ("max_tokens", {"max_tokens": 0}),
    ("max_completion_tokens", {"max_completion_tokens": "10"}),
    ("temperature", {"temperature": "hot"}),
    ("n", {"n": 2}),
])
def test_invalid_bodies_name_the_param(param, over):
    bad(param, **over)


def test_images_are_refused_clearly_for_now():
    error = bad("messages[0].content[1]", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}])
    assert error.code == "unsupported_content"


def test_unknown_model_is_404():
    with pytest.raises(APIError) as caught:
        request(model="gpt-4o")
    assert caught.value.status == 404


@pytest.mark.parametrize("body", [b"{", b"[]", b"\xff", b""])
def test_malformed_json(body):
    with pytest.raises(APIError) as caught:
        parse_body(body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_finish_reasons():
    assert [finish_reason(r) for r in ("end_turn", "stop_sequence", "max_tokens", None, "odd")] == [
        "stop", "stop", "length", "stop", "stop"]


def test_response_shapes_are_openai():
    usage = Usage(11, 7, 5, 3)
    body = completion("chatcmpl-1", "claude-opus-4", 123, "hello", "stop", usage)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello", "refusal": None}
    assert body["usage"]["prompt_tokens"] == 19
    part = chunk("chatcmpl-1", "claude-opus-4", 123, {"content": "x"})
    assert part["object"] == "chat.completion.chunk"
    assert part["choices"] == [{"index": 0, "delta": {"content": "x"}, "logprobs": None,
                                "finish_reason": None}]
    json.dumps(body)
