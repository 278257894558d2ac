"""The writers around an answer that is whole before the CLI's turn ends, and what they tell the run."""

from attrs import define, field

from claude_proxy.errors import APIError
from claude_proxy.events import MessageDelta, MessageStart, RateLimit, Result, ToolUseStart, Usage
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.writers import BufferedWriter

REPORT = RateLimit("allowed", 1, "five_hour")


@define
class FakeRun:
    cancelled: int = 0
    finished: list = field(factory=list)

    def cancel(self):
        self.cancelled += 1

    def delivered(self, answer):
        self.finished.append(answer and f"after {answer.finish}")


@define
class Seen:
    reports: list = field(factory=list)

    def __call__(self, report):
        self.reports.append(report)


def tool_call(writer):
    for event in (MessageStart("m", Usage(1, 1)), ToolUseStart(0, "toolu_1", "mcp__client__f"),
                  MessageDelta("tool_use", 2)):
        writer.cli_event(event)


def writer(seen):
    w = BufferedWriter(ChatEncoder("c", "m", 0), on_quota=seen)
    w.begin(FakeRun())
    return w


def test_an_early_answer_tells_the_run_what_its_session_holds():
    seen = Seen()
    w = writer(seen)
    tool_call(w)
    assert w.done.called and w.early
    assert w.run.finished == ["after tool_use"] and w.run.cancelled == 0
    # What the CLI says after that is not the answer's; a quota report still is seen.
    w.cli_event(REPORT)
    w.cli_finished(Result(False, "success", "late", "end_turn", None, Usage()))
    w.cli_failed(None)
    assert w.error is None and seen.reports == [REPORT] and w.run.finished == ["after tool_use"]


def test_a_report_before_the_end_is_seen_and_the_answer_goes_on():
    seen = Seen()
    w = writer(seen)
    w.cli_event(REPORT)
    assert seen.reports == [REPORT] and w.quota_seen and not w.done.called
    w.cli_finished(Result(False, "success", "hi", "end_turn", None, Usage(1, 1)))
    assert w.done.called and not w.early and w.run.finished == ["after end_turn"]


def test_a_failed_answer_keeps_nothing():
    w = writer(Seen())
    w.done.addErrback(lambda f: None)
    w.cli_failed(APIError(502, "broke"))
    assert w.run.finished == []
