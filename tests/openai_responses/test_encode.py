"""The Responses encoder: the neutral answer → response objects and their event stream."""

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from claude_proxy.answer import Answer, CallArgs, CallStart, SignatureOut, TextOut, ThinkingOut
from claude_proxy.errors import APIError
from claude_proxy.events import MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta, \
    ThinkingSignature, ToolInputDelta, ToolUseStart, Usage
from claude_proxy.openai_responses.encode import ResponsesEncoder, Shape, deleted
from claude_proxy.openai_responses.parse import thinking_block

from tests.streams import answered, named_events

ECHO = {"instructions": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True,
        "metadata": {}, "store": True, "text": {"format": {"type": "text"}}}
EVENTS = TypeAdapter(ResponseStreamEvent)


def shape(**over):
    return Shape(**{"response_id": "resp_r1", "model": "claude-opus-4", "created": 123,
                    "echo": ECHO, **over})


def events(data):
    """Each SSE frame's data; the name must be the data's type, the data one of the SDK's types."""
    out = named_events(data)
    for event in out:
        EVENTS.validate_python(event)
    return out


def done(text="hello", stop="end_turn"):
    return Result(False, "success", text, stop, None, Usage(11, 7, 5, 3, 2))


def test_body_is_a_response():
    kept = []
    encoder = ResponsesEncoder(shape(), lambda response, answer: kept.append(response))
    body = encoder.body(answered(MessageStart("m", Usage(11, 1, 5, 3)), TextDelta("hello"),
                                 result=done()))
    Response.model_validate(body)
    assert body["id"] == "resp_r1" and body["object"] == "response" and body["status"] == "completed"
    assert body["output"] == [{"type": "message", "id": "msg_r1_0", "status": "completed",
                               "role": "assistant", "content": [
                                   {"type": "output_text", "text": "hello", "annotations": [],
                                    "logprobs": []}]}]
    assert body["output_text"] == "hello"
    assert body["usage"] == {"input_tokens": 19,
                             "input_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 3},
                             "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 2},
                             "total_tokens": 26}
    assert body["incomplete_details"] is None and body["error"] is None
    assert body["tool_choice"] == "auto" and body["model"] == "claude-opus-4"
    assert kept == [{k: v for k, v in body.items() if k != "output_text"}]


def test_max_tokens_is_incomplete():
    body = ResponsesEncoder(shape()).body(answered(TextDelta("cut"), MessageDelta("max_tokens", 3)))
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"


def test_body_with_reasoning_and_namespaced_call():
    answer = answered(ThinkingDelta("hmm"), ThinkingSignature("sig"),
                      ToolUseStart(0, "toolu_01A-b", "mcp__client__ns__spawn"),
                      ToolInputDelta(0, '{"a":'), ToolInputDelta(0, "1}"),
                      ToolUseStart(1, "toolu_2", "mcp__client__plain"),
                      MessageDelta("tool_use", 3))
    body = ResponsesEncoder(shape(names={"ns__spawn": ("ns", "spawn")}, summary=True,
                                  encrypted=True)).body(answer)
    Response.model_validate(body)
    reasoning, call, plain = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["id"] == "rs_r1_0"
    assert reasoning["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert thinking_block(reasoning["encrypted_content"])["signature"] == "sig"
    assert call == {"type": "function_call", "id": "fc_r1_1", "call_id": "calltoolu01Ab",
                    "name": "spawn", "namespace": "ns", "arguments": '{"a":1}',
                    "status": "completed"}
    assert plain["name"] == "plain" and "namespace" not in plain and plain["arguments"] == "{}"
    assert body["output_text"] == ""


def test_reasoning_without_summary_or_include():
    body = ResponsesEncoder(shape()).body(answered(ThinkingDelta("t"), ThinkingSignature("s"),
                                                   TextDelta("x"), result=done("x")))
    assert body["output"][0] == {"type": "reasoning", "id": "rs_r1_0", "summary": []}


def test_stream_event_sequence():
    encoder = ResponsesEncoder(shape(summary=True, encrypted=True))
    data = encoder.opening(Answer())
    data += encoder.outs([ThinkingOut("th"), ThinkingOut("ink"), SignatureOut("sig"),
                          TextOut("a\"é"), TextOut("b")])
    data += encoder.outs([CallStart(0, "toolu_1", "read"), CallArgs(0, '{"p":'),
                          CallArgs(0, "1}")])
    answer = answered(ThinkingDelta("think"), ThinkingSignature("sig"), TextDelta("a\"éb"),
                      ToolUseStart(0, "toolu_1", "mcp__client__read"),
                      ToolInputDelta(0, '{"p":1}'), MessageDelta("tool_use", 3))
    data += encoder.closing(answer)
    got = events(data)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert got[0]["response"]["status"] == "in_progress" and got[0]["response"]["output"] == []
    reasoning_done = got[8]["item"]
    assert reasoning_done["summary"] == [{"type": "summary_text", "text": "think"}]
    assert thinking_block(reasoning_done["encrypted_content"])["thinking"] == "think"
    delta = got[11]
    assert delta == {"type": "response.output_text.delta", "item_id": "msg_r1_1",
                     "output_index": 1, "content_index": 0, "logprobs": [], "delta": "a\"é",
                     "sequence_number": 11}
    assert got[13]["text"] == "a\"éb"
    assert got[16]["item"] == {"type": "function_call", "id": "fc_r1_2", "call_id": "calltoolu1",
                               "name": "read", "arguments": "", "status": "in_progress"}
    assert got[19]["arguments"] == '{"p":1}'
    final = got[-1]["response"]
    assert final["status"] == "completed"
    # The final object's items are the streamed ones.
    assert final["output"] == [got[8]["item"], got[15]["item"], got[20]["item"]]


def test_stream_two_calls_keep_their_ids():
    encoder = ResponsesEncoder(shape())
    got = events(encoder.outs([CallStart(0, "toolu_1", "a", "{}"), CallStart(1, "toolu_2", "b")]))
    [first_done] = [e["item"] for e in got if e["type"] == "response.output_item.done"]
    assert (first_done["call_id"], first_done["name"], first_done["arguments"]) == \
        ("calltoolu1", "a", "{}")
    assert got[-1]["item"]["call_id"] == "calltoolu2" and got[-1]["output_index"] == 1


def test_stream_incomplete_and_failed():
    encoder = ResponsesEncoder(shape())
    data = encoder.opening(Answer()) + encoder.outs([TextOut("cut")])
    data += encoder.closing(answered(TextDelta("cut"), MessageDelta("max_tokens", 3)))
    got = events(data)
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert got[-2]["item"]["status"] == "incomplete"

    encoder = ResponsesEncoder(shape())
    data = encoder.opening(Answer()) + encoder.outs([TextOut("part")])
    data += encoder.failure(APIError(429, "Limit.", "rate_limit_error", "usage_limit_reached",
                                     retry_after=30))
    failed = events(data)[-1]
    assert failed["type"] == "response.failed" and failed["sequence_number"] == 5
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "rate_limit_exceeded", "message": "Limit. Please try again in 30s. "
        "(usage_limit_reached)", "type": "rate_limit_error", "param": None}
    failed = events(ResponsesEncoder(shape()).failure(
        APIError(504, "Slow.", "server_error", "cli_idle_timeout")))[0]
    assert failed["response"]["error"]["code"] == "server_error"


def test_a_context_overflow_in_a_stream_has_the_apis_code():
    encoder = ResponsesEncoder(shape())
    error = APIError(400, "prompt is too long: …", "invalid_request_error", "context_length_exceeded")
    data = encoder.opening(Answer()) + encoder.failure(error)
    failed = named_events(data)[-1]
    # Codex reads this code as "ran out of room in the model's context window"; the
    # openai SDK's ResponseError type does not list it, so it is not validated here.
    assert failed["response"]["error"]["code"] == "context_length_exceeded"
    assert encoder.streams_failure(error) is False
    limited = APIError(429, "Slow.", "rate_limit_error", "rate_limit_exceeded", retry_after=3)
    assert encoder.streams_failure(limited) is True


def test_deleted_and_heartbeat():
    assert deleted("resp_1") == {"id": "resp_1", "object": "response", "deleted": True}
    assert ResponsesEncoder(shape()).heartbeat().startswith(b":")
