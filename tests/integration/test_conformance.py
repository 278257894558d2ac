"""
Conformance: the fidelity cases on each wire API, streamed and not, through
the real CLI against the mock API, read with the official SDKs' own types
(tests/integration/conformance.py). One daemon answers every cell, a few at a
time, before the first check; each cell is then checked on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from attrs import field, frozen

from claude_proxy.anthropic_messages.encode import MessagesEncoder
from claude_proxy.answer import Answer
from claude_proxy.events import MessageDelta, MessageStart, TextDelta, ToolInputDelta, ToolUseStart
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.openai_responses.encode import ResponsesEncoder, Shape
from claude_proxy.sse import frame
from tests.integration.conformance import read
from tests.integration.daemons import WIRE_APIS, Response, start_mock_api, start_twistd, wire_request
from tests.integration.test_fidelity import PNG, calls_directive
from tests.streams import DONE, sse

AT_ONCE = 4
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = {
    "chat": [{"type": "function", "function": {
        "name": "weather", "description": "Weather of a city", "parameters": SCHEMA}}],
    "responses": [{"type": "function", "name": "weather", "description": "Weather of a city",
                   "parameters": SCHEMA}],
    "messages": [{"name": "weather", "description": "Weather of a city", "input_schema": SCHEMA}],
}
OUTPUT_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
                 "additionalProperties": False}
STRUCTURED = {
    "chat": {"response_format": {"type": "json_schema", "json_schema": {
        "name": "count", "schema": OUTPUT_SCHEMA, "strict": True}}},
    "responses": {"text": {"format": {"type": "json_schema", "name": "count", "strict": True,
                                      "schema": OUTPUT_SCHEMA}}},
    "messages": {"output_config": {"format": {"type": "json_schema", "schema": OUTPUT_SCHEMA}}},
}
REASONING = {
    "chat": {"model": "claude-sonnet-4", "reasoning_effort": "high"},
    "responses": {"model": "claude-sonnet-4", "reasoning": {"effort": "high", "summary": "auto"},
                  "include": ["reasoning.encrypted_content"]},
    "messages": {"model": "claude-sonnet-4", "thinking": {"type": "adaptive"}},
}
# The answer's end, per API, as each case should give it.
ENDED = {"chat": "stop", "responses": "completed", "messages": "end_turn"}
CALLED = {"chat": "tool_calls", "responses": "completed", "messages": "tool_use"}
CUT = {"chat": "length", "responses": "incomplete", "messages": "max_tokens"}
STOPPED = {"chat": "stop", "messages": "stop_sequence"}
PIECES = json.dumps(["Hello wo", "rld, ST", "OP and more"])


def history(api: str) -> dict:
    """
    A conversation whose last turn answers a tool call and shows an image (as OpenClaw
    sends an image a tool read), in the API's words.
    """
    url = f"data:image/png;base64,{PNG}"
    if api == "chat":
        return {"tools": TOOLS[api], "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "and this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]}
    if api == "responses":
        return {"tools": TOOLS[api], "input": [
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "weather",
             "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "user", "content": [{"type": "input_text", "text": "and this?"},
                                         {"type": "input_image", "image_url": url, "detail": "auto"}]}]}
    return {"tools": TOOLS[api], "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "text", "text": "and this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}


def limited(api: str) -> dict:
    return {{"chat": "max_tokens", "responses": "max_output_tokens", "messages": "max_tokens"}[api]: 50}


def stops(api: str) -> dict:
    return {"stop": ["STOP", "never"]} if api == "chat" else {"stop_sequences": ["STOP", "never"]}


@frozen
class Case:
    name: str
    prompt: str  # the user's message, unless `fields` gives the conversation
    ended: dict[str, str]  # how each API's answer ends; "error": it fails
    calls: tuple[str, ...] = ()
    fields: Callable[[str], dict] = field(default=lambda api: {})  # the request's own fields, by API
    streamed_error: bool = False  # streamed, it fails once the stream has begun
    # The APIs whose stream says this error as an event from the start (Responses: a short
    # rate limit, which Codex waits out and retries only so).
    streamed_by: tuple[str, ...] = ()
    status: int | None = None  # the status of an error answer, where that is settled
    text: str | None = None  # the answer's whole text, where it shows the case did its part


def malformed(api: str) -> dict:
    """A field each API refuses."""
    return {{"chat": "messages", "responses": "input", "messages": "max_tokens"}[api]: None}


def tools(api: str) -> dict:
    return {"tools": TOOLS[api]}


ERROR = dict.fromkeys(WIRE_APIS, "error")
CASES = [
    Case("text", "hello", ENDED),
    Case("tool call", f"weather? {calls_directive(('weather', {'city': 'Paris'}), text='Let me look.')}",
         CALLED, ("weather",), tools),
    Case("tool result and image", "", ENDED, fields=history, text="MOCK REPLY to: and this?"),
    Case("two parallel calls",
         f"both {calls_directive(('weather', {'city': 'Paris'}), ('weather', {'city': 'Oslo'}))}",
         CALLED, ("weather", "weather"), tools),
    Case("structured output", f"count {calls_directive(('StructuredOutput', {'n': 3}))}", ENDED,
         fields=STRUCTURED.get, text='{"n": 3}'),
    Case("max tokens", "long [[mock:max_tokens]]", CUT, fields=limited),
    Case("stop sequence", f"go [[mock:text pieces='{PIECES}']]", STOPPED, fields=stops,
         text="Hello world, "),
    Case("reasoning", "think [[mock:thinking]]", ENDED, fields=REASONING.get),
    Case("rate limited", "[[mock:error status=429 type=rate_limit_error retry_after=7]]", ERROR,
         streamed_by=("responses",)),
    Case("overloaded", "[[mock:error status=529 type=overloaded_error]]", ERROR),
    Case("refused by the API", "[[mock:error status=400 type=invalid_request_error "
                               "message='prompt is too long: 210000 tokens > 200000 maximum']]", ERROR),
    Case("broken stream", "tell me [[mock:midstream_error]]", ENDED, streamed_error=True),
    Case("bad request", "hello", ERROR, fields=malformed, status=400),
    Case("unknown model", "hello", ERROR, fields=lambda api: {"model": "gpt-4o"}, status=404),
]
CELLS = [(case, api, stream) for case in CASES for api in WIRE_APIS if api in case.ended
         for stream in (False, True)]


def usage_asked(case: Case, api: str, stream: bool) -> bool:
    """Chat streams ask for the usage chunk, but for plain text (which checks it is then absent)."""
    return api == "chat" and stream and case.name != "text"


def ask(daemon, case: Case, api: str, stream: bool) -> Response:
    over = case.fields(api)
    if usage_asked(case, api, stream):
        over = {**over, "stream_options": {"include_usage": True}}
    path, body, headers = wire_request(api, case.prompt, stream, **over)
    return daemon.request("POST", path, body, headers)


@pytest.fixture(scope="module")
def answers(tmp_path_factory, cli_path):
    mock = start_mock_api()
    # No pre-started processes: nearly every request has a shape of its own, so they would go unused.
    daemon = start_twistd(tmp_path_factory.mktemp("conformance"), "--cli-retries", "0", "--warm", "0",
                          "--max-concurrent", str(AT_ONCE),
                          "--cli-env", f"ANTHROPIC_BASE_URL={mock.base_url}",
                          "--cli-env", "ANTHROPIC_API_KEY=sk-test", cli=cli_path)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(AT_ONCE) as pool:
            got = list(pool.map(lambda cell: ask(daemon, *cell), CELLS))
        print(f"conformance: {len(CELLS)} answers in {time.monotonic() - started:.1f} s")
        yield {(case.name, api, stream): answer for (case, api, stream), answer in zip(CELLS, got)}
    finally:
        daemon.stop()
        mock.stop()


@pytest.mark.slow
@pytest.mark.parametrize("case, api, stream", CELLS,
                         ids=[f"{c.name}-{api}-{'stream' if s else 'whole'}" for c, api, s in CELLS])
def test_the_sdks_read_it(answers, case, api, stream):
    answer = read(api, answers[case.name, api, stream], usage_asked(case, api, stream))
    assert answer.problems == ()
    streamed_error = stream and (case.streamed_error or api in case.streamed_by)
    if case.ended[api] == "error" and not streamed_error:
        assert answer.status >= 400 and answer.error
        if case.status is not None:
            assert answer.status == case.status
    elif streamed_error:
        assert (answer.status, answer.streamed) == (200, True) and answer.error
    else:
        assert (answer.status, answer.streamed, answer.finish, answer.error) == (
            200, stream, case.ended[api], None)
        assert [name for name, _ in answer.calls] == list(case.calls)
        assert answer.text or answer.calls
        if case.text is not None:
            assert answer.text == case.text


# --- The reader itself: it finds what it must find, in streams the encoders make and then break ---

ENCODERS = {
    "chat": lambda: ChatEncoder("chatcmpl-1", "claude-sonnet-4", 123, include_usage=True),
    "responses": lambda: ResponsesEncoder(Shape("resp_1", "claude-sonnet-4", 123, {
        "tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "store": True})),
    "messages": lambda: MessagesEncoder("msg_1", "claude-sonnet-4"),
}
TEXT_AND_CALL = [MessageStart("m"), TextDelta("Let me "), TextDelta("look."),
                 ToolUseStart(1, "toolu_1", "mcp__client__weather"), ToolInputDelta(1, '{"city":'),
                 ToolInputDelta(1, ' "Paris"}'), MessageDelta("tool_use", 7)]


def encoded(api: str) -> list[tuple[str | None, dict | str]]:
    """A streamed answer with text and a call, as the API's encoder streams it: (name, data)s."""
    encoder, answer, data = ENCODERS[api](), Answer(), b""
    for event in TEXT_AND_CALL:
        outs = answer.feed(event)
        if isinstance(event, MessageStart):
            data += encoder.opening(answer)
        data += encoder.outs(outs)
    data += encoder.closing(answer)
    return [(e.name, e.data if e.data == DONE else json.loads(e.data)) for e in sse(data)]


def streamed(events: list[tuple[str | None, dict | str]]) -> Response:
    body = b"".join(frame(data.encode() if isinstance(data, str) else json.dumps(data).encode(), name)
                    for name, data in events)
    return Response(200, {"content-type": "text/event-stream"}, body)


def problems(api: str, events, usage_asked: bool = True) -> str:
    return "\n".join(read(api, streamed(events), usage_asked=usage_asked and api == "chat").problems)


@pytest.mark.parametrize("api", WIRE_APIS)
def test_an_encoded_stream_reads_whole(api):
    answer = read(api, streamed(encoded(api)), usage_asked=api == "chat")
    assert answer.problems == ()
    assert (answer.text, answer.calls) == ("Let me look.", [("weather", '{"city": "Paris"}')])


def test_what_breaks_a_chat_stream():
    events = encoded("chat")
    [i] = [i for i, (_, data) in enumerate(events) if "usage" in data]
    swapped = events[:i - 1] + [events[i], events[i - 1]] + events[i + 1:]
    assert "not alone in the last" in problems("chat", swapped)
    assert f"usage in chunks [{i}], not asked for" in problems("chat", events, usage_asked=False)
    assert "chunks of 2 ids" in problems("chat", [events[0], (None, {**events[1][1], "id": "other"}),
                                                  *events[2:]])
    twice = events[:i] + [events[i - 1]] + events[i:]
    assert "2 chunks with a finish_reason" in problems("chat", twice)
    assert "no [DONE]" in problems("chat", events[:-1])
    odd = {**events[1][1], "choices": [{**events[1][1]["choices"][0], "odd": 1}]}
    assert ".choices[0].odd is not a field of Choice" in problems("chat", [events[0], (None, odd),
                                                                            *events[2:]])


def test_what_breaks_a_responses_stream():
    events = encoded("responses")
    kinds = [data["type"] for _, data in events]
    added = kinds.index("response.output_item.added", kinds.index("response.output_item.done"))
    assert "sequence numbers" in problems("responses", events[:3] + events[4:])
    renumbered = [(name, {**data, "sequence_number": n}) for n, (name, data) in
                  enumerate(events[:added - 1] + events[added:])]
    assert "output_index 1 while [0] open" in problems("responses", renumbered)
    moved = [(name, {**data, "output_index": 5} if data["type"].endswith(".delta") else data)
             for name, data in events]
    assert "output_index 5 is not an open item" in problems("responses", moved)
    assert "ends []" in problems("responses", events[:-1])


def test_what_breaks_a_messages_stream():
    events = encoded("messages")
    kinds = [data["type"] for _, data in events]
    stop = kinds.index("content_block_stop")
    assert "index 1, block 0 open" in problems("messages", events[:stop] + events[stop + 1:])
    assert "ends with" in problems("messages", events[:-1])
    assert "begins with" in problems("messages", events[1:])
    delta = kinds.index("content_block_delta")
    thought = (events[delta][0], {**events[delta][1], "delta": {"type": "thinking_delta",
                                                                "thinking": "x"}})
    assert "thinking_delta in a text block" in problems("messages", events[:delta] + [thought]
                                                        + events[delta + 1:])
