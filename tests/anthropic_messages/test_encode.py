"""The Messages encoder: the neutral answer → Anthropic message objects and events."""

from anthropic.lib.streaming._messages import accumulate_event

from claude_proxy.anthropic_messages.encode import MessagesEncoder
from claude_proxy.answer import Answer, SignatureOut, TextOut, ThinkingOut
from claude_proxy.errors import APIError
from claude_proxy.events import (
    MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta, ThinkingSignature,
    ToolInputDelta, ToolUseStart, Usage,
)

from tests.streams import named_events

START = Usage(11, 1, 5, 3)


def encoder():
    return MessagesEncoder("msg_1", "claude-sonnet-4")


def events(data: bytes) -> list[tuple[str, dict]]:
    return [(payload["type"], payload) for payload in named_events(data)]


def stream(answer_events, result=None, stops=()):
    """Encode a streamed answer as the StreamWriter would: opening, outs, closing."""
    enc, answer = encoder(), Answer(stops)
    data = b""
    for event in answer_events:
        outs = answer.feed(event)
        if isinstance(event, MessageStart):
            data += enc.opening(answer)
        data += enc.outs(outs)
    if result is not None and not answer.complete:
        data += enc.outs(answer.result(result))
    return data + enc.closing(answer), answer


def accumulated(data: bytes):
    """What the anthropic SDK's stream helper makes of the events (it is strict about order)."""
    snapshot, json_bufs = None, {}
    for _, payload in events(data):
        if payload["type"] in ("ping", "message_stop", "error"):
            continue
        snapshot = accumulate_event(event=payload, current_snapshot=snapshot, json_bufs=json_bufs)
    message = snapshot.to_dict(warnings=False)
    assert message.pop("stop_details", None) is None  # the SDK's own field, set from message_delta
    return message


THINK_THEN_CALLS = [
    MessageStart("m", START), ThinkingDelta("let me "), ThinkingDelta("see"),
    ThinkingSignature("c2ln"), TextDelta("Checking."),
    ToolUseStart(2, "toolu_A", "mcp__client__weather"), ToolInputDelta(2, '{"city":'),
    ToolInputDelta(2, '"Paris"}'), ToolUseStart(3, "toolu_B", "mcp__client__time"),
    MessageDelta("tool_use", 42),
]


def test_stream_event_sequence():
    data, _ = stream(THINK_THEN_CALLS)
    kinds = [(k, p.get("index"), (p.get("delta") or p.get("content_block") or {}).get("type"))
             for k, p in events(data)]
    assert kinds == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"), ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"), ("content_block_stop", 3, None),
        ("message_delta", None, None), ("message_stop", None, None),
    ]
    start = events(data)[0][1]["message"]
    assert start == {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                     "content": [], "stop_reason": None, "stop_sequence": None,
                     "usage": {"input_tokens": 11, "cache_creation_input_tokens": 3,
                               "cache_read_input_tokens": 5, "output_tokens": 1}}
    delta = events(data)[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 42


def test_the_sdk_accumulates_the_stream_into_the_body():
    data, answer = stream(THINK_THEN_CALLS)
    body = encoder().body(answer)
    assert accumulated(data) == body
    assert body["content"] == [
        {"type": "thinking", "thinking": "let me see", "signature": "c2ln"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_B", "name": "time", "input": {}},
    ]
    assert body["stop_reason"] == "tool_use"


def test_text_after_a_new_thinking_block_and_signature_apart():
    enc = encoder()
    data = enc.outs([ThinkingOut("a"), SignatureOut("s1"), ThinkingOut("b"), TextOut("x"),
                     TextOut("y")])
    kinds = [(k, p.get("index")) for k, p in events(data)]
    assert kinds == [("content_block_start", 0), ("content_block_delta", 0),
                     ("content_block_delta", 0), ("content_block_stop", 0),
                     ("content_block_start", 1), ("content_block_delta", 1),
                     ("content_block_stop", 1), ("content_block_start", 2),
                     ("content_block_delta", 2), ("content_block_delta", 2)]
    texts = [p["delta"]["text"] for k, p in events(data) if p.get("index") == 2 and k.endswith("delta")]
    assert texts == ["x", "y"]


def test_stop_sequence():
    data, answer = stream([MessageStart("m", START), TextDelta("one END two")],
                          result=Result(False, "success", "one END two", "end_turn", None,
                                        Usage(11, 9, 5, 3)), stops=("END",))
    body = encoder().body(answer)
    assert body["content"] == [{"type": "text", "text": "one "}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")
    assert accumulated(data) == body


def test_max_tokens_and_usage():
    answer = Answer()
    for event in (MessageStart("m", START), TextDelta("partial"), MessageDelta("max_tokens", 5)):
        answer.feed(event)
    body = encoder().body(answer)
    assert body["stop_reason"] == "max_tokens" and body["stop_sequence"] is None
    assert body["usage"] == {"input_tokens": 11, "cache_creation_input_tokens": 3,
                             "cache_read_input_tokens": 5, "output_tokens": 5}


def test_empty_and_structured_answers():
    answer = Answer(structured=True)
    answer.feed(TextDelta("ignored prose"))
    answer.result(Result(False, "success", "", "end_turn", None, Usage(1, 2), {"a": 1}))
    assert encoder().body(answer)["content"] == [{"type": "text", "text": '{"a": 1}'}]
    empty = Answer()
    empty.result(Result(False, "success", "", "end_turn", None, Usage(1, 0)))
    assert encoder().body(empty)["content"] == []


def test_failure_and_heartbeat():
    enc = encoder()
    [(kind, payload)] = events(enc.failure(APIError(503, "busy", "server_error", "upstream_overloaded")))
    assert kind == "error"
    assert payload == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert events(enc.heartbeat()) == [("ping", {"type": "ping"})]
