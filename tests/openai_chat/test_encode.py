"""The Chat Completions encoder: the neutral answer → OpenAI bodies and chunks."""

import re

from claude_proxy.answer import Answer, CallArgs, CallStart, SignatureOut, TextOut, ThinkingOut
from claude_proxy.errors import APIError
from claude_proxy.events import MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta, \
    ToolUseStart, Usage
from claude_proxy.openai_chat.encode import ChatEncoder, finish_reason

from tests.streams import DONE, answered, data_events

CALL_ID = re.compile(r"call[A-Za-z0-9]+")


def encoder(include_usage=False):
    return ChatEncoder("chatcmpl-1", "claude-opus-4", 123, include_usage)


def chunks(data):
    return [c for c in data_events(data) if c != DONE]


def test_finish_reasons():
    assert [finish_reason(r) for r in ("end_turn", "stop_sequence", "max_tokens", "tool_use",
                                       None, "odd")] == [
        "stop", "stop", "length", "tool_calls", "stop", "stop"]


def test_body_is_a_chat_completion():
    answer = answered(MessageStart("m", Usage(11, 1, 5, 3)), TextDelta("hello"),
                      result=Result(False, "success", "hello", "end_turn", None, Usage(11, 7, 5, 3)))
    body = encoder().body(answer)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-1"
    assert body["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "hello",
                                            "refusal": None}}]
    assert body["usage"] == {"prompt_tokens": 19, "completion_tokens": 7, "total_tokens": 26,
                             "prompt_tokens_details": {"cached_tokens": 5},
                             "completion_tokens_details": {"reasoning_tokens": 0}}


def test_body_with_reasoning_and_tool_calls():
    answer = answered(ThinkingDelta("hmm"), ToolUseStart(0, "toolu_01A-b", "mcp__client__ping"),
                      MessageDelta("tool_use", 3))
    message = encoder().body(answer)["choices"][0]["message"]
    assert message["content"] is None and message["reasoning_content"] == "hmm"
    [call] = message["tool_calls"]
    assert CALL_ID.fullmatch(call["id"]) and call["id"] == "calltoolu01Ab"
    assert call["function"] == {"name": "ping", "arguments": "{}"}
    assert encoder().body(answer)["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_chunks():
    enc = encoder(include_usage=True)
    opening = chunks(enc.opening(Answer()))
    assert opening[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    body = chunks(enc.outs([TextOut("a\"é"), ThinkingOut("t"), SignatureOut("s"),
                            CallStart(0, "toolu_1", "read"), CallArgs(0, "{}")]))
    assert [c["choices"][0]["delta"] for c in body] == [
        {"content": "a\"é"}, {"reasoning_content": "t"},
        {"tool_calls": [{"index": 0, "id": "calltoolu1", "type": "function",
                         "function": {"name": "read", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in body)
    end = enc.closing(answered(TextDelta("x"), result=Result(False, "success", "x", "max_tokens",
                                                             None, Usage(1, 2))))
    assert data_events(end)[-1] == DONE
    finish, usage = chunks(end)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2


def test_the_fast_text_chunk_is_the_same_as_the_slow_one():
    enc = encoder()
    fast = enc.outs([TextOut("x\n\u2028y")])
    assert chunks(fast) == [enc.chunk({"content": "x\n\u2028y"})]


def test_a_failure_after_the_start_is_an_error_event_then_done():
    data = encoder().failure(APIError(502, "broke", "server_error", "cli_error"))
    assert chunks(data) == [{"error": {"message": "broke", "type": "server_error", "param": None,
                                       "code": "cli_error"}}]
    assert data_events(data)[-1] == DONE
