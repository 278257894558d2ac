"""
Answer: the CLI's events (mostly replayed from real CLI 2.1.330 samples) in,
neutral pieces (Out), parts, finish reason and usage out.
"""

import json

import pytest

from claude_proxy.answer import Answer, CallArgs, CallStart, SignatureOut, TextOut, ThinkingOut
from claude_proxy.events import (
    MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta, ThinkingTokens, ToolInputDelta,
    ToolUseStart, Usage, parse_line,
)

from tests.fakes import sample_lines

PARTIAL = "stream-json-partial.jsonl"
THINKING = "stream-json-thinking.jsonl"
FALLBACK = "midstream-error-fallback.jsonl"
TOOL_CALLS = "tool-calls-held.jsonl"
STRUCTURED = "structured-output.jsonl"

# The usage of the text samples' message_start.
START_USAGE = Usage(11, 1)


def events(name):
    return [e for e in map(parse_line, sample_lines(f"cli-2.1.330/{name}")) if e is not None]


def give(answer, event):
    """What the writers do: result lines go to result(), everything else to feed()."""
    return answer.result(event) if isinstance(event, Result) else answer.feed(event)


def replay(answer, found):
    deltas = []
    for event in found:
        deltas += give(answer, event)
    return deltas


def content(outs):
    return "".join(o.text for o in outs if isinstance(o, TextOut))


def result(text, stop_reason="end_turn", usage=Usage(), structured_output=None):
    return Result(False, "success", text, stop_reason, None, usage, structured_output)


def replace_end(found, end):
    """A sample with its message_delta swapped for another and its result line dropped."""
    return [end if isinstance(e, MessageDelta) else e for e in found if not isinstance(e, Result)]


# -- text


def test_streamed_text_then_result():
    found = events(PARTIAL)
    answer = Answer()
    deltas = replay(answer, found[:-1])
    assert deltas == [TextOut("MOCK RE"), TextOut("PLY to:"), TextOut(" hello")]
    assert not answer.complete  # end_turn waits for the authoritative result line
    assert give(answer, found[-1]) == []
    assert (answer.complete, answer.finish, answer.usage) == (True, "end_turn", Usage(11, 7))
    assert (answer.text, answer.reasoning, answer.calls) == ("MOCK REPLY to: hello", "", [])


def test_text_that_only_arrives_in_the_result_is_appended():
    # The first delta of the real sample, then its result line.
    found = [e for e in events(PARTIAL) if not isinstance(e, TextDelta) or e.text == "MOCK RE"]
    answer = Answer()
    assert replay(answer, found) == [TextOut("MOCK RE"), TextOut("PLY to: hello")]
    assert answer.text == "MOCK REPLY to: hello"
    assert answer.finish == "end_turn"


def test_midstream_fallback_result_replaces_the_streamed_text():
    answer = Answer()
    # Streamed text cannot be taken back: nothing more is streamed...
    assert replay(answer, events(FALLBACK)) == [TextOut("partial ")]
    # ...but the answer is the CLI's final one, and a stream must say it diverged.
    assert answer.text == "MOCK REPLY to: hello"
    assert answer.diverged
    assert (answer.finish, answer.usage) == ("end_turn", Usage(22, 8))


def test_fallback_result_that_goes_on_from_the_streamed_text_sends_the_rest():
    # "X" is held back as a possible stop, so only "MOCK " reached the client;
    # the retry's answer goes on from that, not from the broken stream's "MOCK X".
    answer = Answer(("XYZ",))
    assert answer.feed(TextDelta("MOCK X")) == [TextOut("MOCK ")]
    assert answer.result(result("MOCK REPLY")) == [TextOut("REPLY")]
    assert (answer.text, answer.diverged, answer.finish) == ("MOCK REPLY", False, "end_turn")


def test_result_stop_reason_maps_to_finish():
    answer = Answer()
    answer.feed(TextDelta("cut"))
    answer.result(result("cut", stop_reason="max_tokens"))
    assert answer.finish == "max_tokens"


# -- stop sequences


def feed_until_complete(answer, found):
    """The deltas and how many events it took to complete (None if it never did)."""
    deltas = []
    for n, event in enumerate(found, 1):
        deltas += give(answer, event)
        if answer.complete:
            return deltas, n
    return deltas, None


@pytest.mark.parametrize("stop, expected, text_deltas", [
    ("K", "MOC", 1),             # inside the first delta
    ("REPLY", "MOCK ", 2),       # split across two deltas
    ("to: h", "MOCK REPLY ", 3),
    ("PLY to: hel", "MOCK RE", 3),  # across three deltas
])
def test_stop_cuts_content_and_completes_early(stop, expected, text_deltas):
    found = events(PARTIAL)
    answer = Answer((stop,))
    deltas, fed = feed_until_complete(answer, found)
    assert content(deltas) == expected
    assert (answer.finish, answer.stop_sequence) == ("stop_sequence", stop)
    # Complete on the delta that holds the end of the stop, before the CLI ends its turn.
    texts = [n for n, e in enumerate(found, 1) if isinstance(e, TextDelta)]
    assert fed == texts[text_deltas - 1]
    assert answer.usage == START_USAGE
    assert answer.text == expected
    # Nothing after completion changes the answer.
    assert replay(answer, found[fed:]) == []
    assert answer.feed(TextDelta("more")) == [] and answer.usage == START_USAGE


def test_a_stop_that_never_completes_is_text():
    answer = Answer(("to: hi",))  # held back while the text ends in "to:", then let go
    assert content(replay(answer, events(PARTIAL))) == "MOCK REPLY to: hello"
    assert (answer.finish, answer.stop_sequence) == ("end_turn", None)


def test_stop_settled_only_at_the_result():
    # "b" matches, but "abc" might still become the earlier-starting "abcd".
    answer = Answer(("abcd", "b"))
    assert content(answer.feed(TextDelta("xab")) + answer.feed(TextDelta("c"))) == "x"
    assert not answer.complete
    assert content(answer.result(result("xabc"))) == "a"
    assert (answer.finish, answer.stop_sequence, answer.text) == ("stop_sequence", "b", "xa")


def test_held_back_partial_stop_is_flushed_at_the_token_limit():
    found = replace_end(events(PARTIAL), MessageDelta("max_tokens", 7))
    answer = Answer(("hello!",))
    deltas = replay(answer, found)
    assert deltas[-1] == TextOut("hello")  # held back as a possible "hello!" until now
    assert content(deltas) == "MOCK REPLY to: hello"
    assert answer.finish == "max_tokens"


@pytest.mark.parametrize("stop, found, expected", [
    # The real sample ends in "hello", a prefix of the stop, held back until the result.
    ("hello!", events(PARTIAL), "MOCK REPLY to: hello"),
    # The result completes the stop the stream began.
    ("world", [TextDelta("Hello wor"), result("Hello world")], "Hello "),
], ids=["sample-ends-in-partial-stop", "result-completes-stop"])
def test_held_back_partial_stop_is_not_repeated_at_the_result(stop, found, expected):
    answer = Answer((stop,))
    assert content(replay(answer, found)) == expected
    assert answer.text == expected


def test_fallback_result_text_is_cut_at_the_stop():
    answer = Answer(("REPLY",))
    replay(answer, events(FALLBACK))
    assert answer.text == "MOCK "


def test_stop_settled_at_the_token_limit_finishes_with_stop():
    answer = Answer(("abcd", "b"))
    deltas = answer.feed(TextDelta("xabc")) + answer.feed(MessageDelta("max_tokens", 4))
    assert content(deltas) == "xa"
    assert answer.finish == "stop_sequence"


# -- tool calls

def test_tool_calls_stream_in_order_with_their_arguments():
    answer = Answer()
    outs = [o for o in replay(answer, events(TOOL_CALLS)) if isinstance(o, (CallStart, CallArgs))]
    first_id, second_id = outs[0].call_id, outs[4].call_id
    assert outs == [
        CallStart(0, first_id, "read_file"),
        CallArgs(0, '{"path": '), CallArgs(0, '"/etc/hos'), CallArgs(0, 'ts"}'),
        CallStart(1, second_id, "exec"),
        CallArgs(1, '{"cmd": "'), CallArgs(1, 'ls"}'),
    ]
    assert first_id.startswith("toolu_") and first_id != second_id


def test_tool_use_stop_completes_with_tool_calls():
    found = events(TOOL_CALLS)
    end = found.index(MessageDelta("tool_use", 7))
    answer = Answer()
    replay(answer, found[:end])
    assert not answer.complete
    replay(answer, found[end:])
    assert (answer.finish, answer.usage) == ("tool_use", Usage(11, 7, 5, 3))
    assert answer.feed(TextDelta("late")) == []
    assert answer.result(result("late")) == [] and answer.usage == Usage(11, 7, 5, 3)


def test_tool_call_message_has_the_full_arguments():
    answer = Answer()
    replay(answer, events(TOOL_CALLS))
    assert answer.text == "Calling."  # the text the model wrote before calling
    assert [p.kind for p in answer.parts] == ["text", "tool_use", "tool_use"]
    assert [(c.name, c.arguments) for c in answer.calls] == [
        ("read_file", '{"path": "/etc/hosts"}'), ("exec", '{"cmd": "ls"}')]


def test_tool_call_without_text_or_arguments():
    answer = Answer()
    replay(answer, [MessageStart("m", START_USAGE), ToolUseStart(0, "toolu_1", "mcp__client__ping"),
                    MessageDelta("tool_use", 3)])
    assert answer.finish == "tool_use"
    assert answer.text == ""
    assert [(c.call_id, c.name, c.arguments) for c in answer.calls] == [("toolu_1", "ping", "")]


def test_tools_not_the_clients_are_ignored():
    answer = Answer()
    deltas = replay(answer, [ToolUseStart(0, "toolu_1", "Bash"), ToolInputDelta(0, '{"a": 1}'),
                             MessageDelta("tool_use", 3)])
    assert deltas == [] and not answer.complete
    assert answer.calls == []


def test_token_limit_finishes_with_length():
    found = replace_end(events(PARTIAL), MessageDelta("max_tokens", 7))
    answer = Answer()
    assert content(replay(answer, found)) == "MOCK REPLY to: hello"
    assert (answer.finish, answer.usage) == ("max_tokens", Usage(11, 7))


# -- reasoning


def test_thinking_and_its_signature_come_first():
    answer = Answer()
    deltas = replay(answer, events(THINKING))
    assert deltas[:2] == [ThinkingOut("Let me think about this."), SignatureOut("bW9jay1zaWduYXR1cmU=")]
    assert content(deltas) == "MOCK REPLY to: hello"
    assert [(p.kind, p.text, p.signature) for p in answer.parts] == [
        ("thinking", "Let me think about this.", "bW9jay1zaWduYXR1cmU="),
        ("text", "MOCK REPLY to: hello", "")]
    # The API reported no thinking count: the CLI's estimate (system/thinking_tokens) stands in.
    assert answer.usage == Usage(11, 7, reasoning_tokens=6)


def test_thinking_estimate_never_exceeds_the_output_tokens():
    answer = Answer()
    replay(answer, [ThinkingTokens(50), ThinkingTokens(20), MessageDelta("max_tokens", 9)])
    assert answer.usage.reasoning_tokens == 9


def test_reasoning_is_not_cut_by_stops():
    answer = Answer(("think",))
    assert answer.feed(ThinkingDelta("I think")) == [ThinkingOut("I think")]
    assert not answer.complete


# -- structured output (response_format)


def test_structured_output_is_sent_whole_once_checked():
    found = events(STRUCTURED)
    answer = Answer(structured=True)
    # The tool input streams by, but an attempt the CLI rejects must not reach the client.
    assert replay(answer, found[:-1]) == []
    assert not answer.complete  # the StructuredOutput tool_use is not a client call
    assert give(answer, found[-1]) == [TextOut('{"city": "Paris", "n": 3}')]
    assert (answer.finish, answer.error) == ("end_turn", None)
    assert json.loads(answer.text) == {"city": "Paris", "n": 3}
    assert answer.calls == []


def test_structured_mode_ignores_prose():
    answer = Answer(structured=True)
    assert answer.feed(TextDelta("Here is the JSON:")) == []
    assert answer.result(result("prose", structured_output={"a": "é"})) == [TextOut('{"a": "é"}')]
    assert answer.text == '{"a": "é"}'


def test_structured_answer_from_json_result_text():
    answer = Answer(structured=True)
    assert content(answer.result(result('{"n": [1, 2]}'))) == '{"n": [1, 2]}'
    assert answer.finish == "end_turn"


def test_structured_answer_missing_is_an_error():
    answer = Answer(structured=True)
    assert answer.result(result("Sorry, no JSON today.")) == []
    assert answer.error is not None
    assert (answer.error.status, answer.error.code) == (502, "invalid_structured_output")
    assert not answer.complete


def test_a_turn_that_went_on_reports_only_its_own_message():
    # A live session's tool turn: the result line sums both API calls of the CLI's turn.
    answer = Answer()
    replay(answer, [MessageStart("m", Usage(11, 1, 5, 3)), TextDelta("done"),
                    MessageDelta("end_turn", 7)])
    answer.result(result("done", usage=Usage(22, 14, 10, 6)))
    assert answer.usage == Usage(11, 7, 5, 3)
