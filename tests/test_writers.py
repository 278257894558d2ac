"""The writers around an answer that is whole before the CLI's turn ends."""

from attrs import define, field
from twisted.internet.task import Clock

from claude_proxy.events import MessageDelta, MessageStart, RateLimit, Result, ToolUseStart, Usage
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.writers import QUOTA_GRACE_SECONDS, BufferedWriter

REPORT = RateLimit("allowed", 1, "five_hour")


@define
class FakeRun:
    cancelled: int = 0

    def cancel(self):
        self.cancelled += 1


@define
class Seen:
    reports: list = field(factory=list)

    def __call__(self, report):
        self.reports.append(report)


def tool_call(writer):
    for event in (MessageStart("m", Usage(1, 1)), ToolUseStart(0, "toolu_1", "mcp__client__f"),
                  MessageDelta("tool_use", 2)):
        writer.cli_event(event)


def writer(clock, seen, await_quota=True):
    w = BufferedWriter(ChatEncoder("c", "m", 0), clock=clock, on_quota=seen,
                       await_quota=await_quota)
    w.begin(FakeRun())
    return w


def test_an_early_answer_waits_for_the_quota_then_ends_the_cli():
    clock, seen = Clock(), Seen()
    w = writer(clock, seen)
    tool_call(w)
    assert w.done.called and w.early and w.run.cancelled == 0
    w.cli_event(REPORT)
    assert seen.reports == [REPORT] and w.run.cancelled == 1
    assert clock.getDelayedCalls() == []


def test_without_a_report_the_cli_is_ended_after_the_grace():
    clock, seen = Clock(), Seen()
    w = writer(clock, seen)
    tool_call(w)
    clock.advance(QUOTA_GRACE_SECONDS)
    assert w.run.cancelled == 1 and seen.reports == []
    # What the CLI says after that is not the answer's.
    w.cli_finished(Result(False, "success", "late", "end_turn", None, Usage()))
    w.cli_failed(None)
    assert w.error is None


def test_an_account_known_not_to_report_ends_at_once():
    clock, seen = Clock(), Seen()
    w = writer(clock, seen, await_quota=False)
    tool_call(w)
    assert w.run.cancelled == 1 and clock.getDelayedCalls() == []


def test_a_report_before_the_end_is_seen_and_the_answer_goes_on():
    clock, seen = Clock(), Seen()
    w = writer(clock, seen)
    w.cli_event(REPORT)
    assert seen.reports == [REPORT] and w.quota_seen and not w.done.called
    w.cli_finished(Result(False, "success", "hi", "end_turn", None, Usage(1, 1)))
    assert w.done.called and not w.early
