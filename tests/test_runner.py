import json
import os

import pytest
from attrs import define, field

from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.errors import APIError
from claude_proxy.events import Result, TextDelta
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.runner import DRAIN_SECONDS, Runner
from claude_proxy.turn import DELIVERED, ENDED, ENDING, QUEUED, RUNNING

from tests.fakes import sample_lines

PARTIAL = sample_lines("cli-2.1.330/stream-json-partial.jsonl")


@define(eq=False)
class Recorder:
    events: list = field(factory=list)
    result: Result | None = None
    error: APIError | None = None
    endings: int = 0

    def cli_event(self, event):
        self.events.append(event)

    def cli_finished(self, result):
        self.result = result
        self.endings += 1

    def cli_failed(self, error):
        self.error = error
        self.endings += 1


def plan(system="be brief"):
    body = {"model": "claude-haiku-4", "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "hello"}]}
    return build_plan(parse_chat_request(body), CLISettings("/bin/claude"), {"PATH": "/bin"})


@pytest.fixture
def runner(reactor, tmp_path):
    return Runner(reactor, max_concurrent=2, queue_size=1, timeout=600, idle_timeout=180,
                  kill_grace=5, scratch_root=str(tmp_path))


def test_spawn_writes_stdin_once_and_prompt_to_a_private_file(runner, reactor, tmp_path):
    recorder = Recorder()
    runner.submit(plan(system="SECRET SYSTEM"), recorder)
    [process] = reactor.spawned
    # Without tools there is no control channel to serve: stdin closes once written.
    assert process.stdin_closed and b'"text":"hello"' in bytes(process.stdin)
    prompt_file = process.args[process.args.index("--system-prompt-file") + 1]
    assert open(prompt_file).read() == "SECRET SYSTEM"
    assert oct(os.stat(prompt_file).st_mode & 0o777) == "0o600"
    assert process.path == os.path.dirname(prompt_file)
    assert process.path.startswith(str(tmp_path))
    assert process.env["CLAUDE_CODE_TMPDIR"].startswith(process.path)
    assert process.env["CLAUDE_CONFIG_DIR"].startswith(process.path)
    assert not any("SECRET" in arg for arg in process.args)


@define(eq=False)
class Delivering(Recorder):
    """A writer: it reports delivery as it takes the result."""

    run: object = None

    def cli_finished(self, result):
        super().cli_finished(result)
        self.run.delivered(None)


def test_a_turn_goes_queued_running_delivered_ended(runner, reactor):
    first, second = Delivering(), Delivering()
    runs = [runner.submit(plan(), r) for r in (first, second)]
    first.run, second.run = runs
    queued = runner.submit(plan(), Recorder())
    assert [r.state for r in runs] == [RUNNING, RUNNING] and queued.state == QUEUED
    process = reactor.spawned[0]
    process.emit(*PARTIAL)
    assert runs[0].state == DELIVERED  # the CLI has still to exit
    process.exit(0)
    assert runs[0].state == ENDED and runs[0].exited.called and queued.state == RUNNING
    queued.cancel()  # the client went away: its process is being ended
    assert queued.state == ENDING and reactor.spawned[2].signals == ["TERM"]
    reactor.spawned[2].exit(None, signal=15)
    assert queued.state == ENDED


def test_events_then_result_then_cleanup(runner, reactor):
    recorder = Recorder()
    run = runner.submit(plan(), recorder)
    [process] = reactor.spawned
    workdir = process.path
    process.emit(*PARTIAL)
    assert [e.text for e in recorder.events if isinstance(e, TextDelta)] == [
        "MOCK RE", "PLY to:", " hello"]
    assert recorder.result.text == "MOCK REPLY to: hello"
    assert process.stdin_closed
    assert runner.in_flight == 1  # until the process is reaped
    process.exit(0)
    assert runner.in_flight == 0 and run.exited.called
    assert not os.path.exists(workdir)
    assert reactor.getDelayedCalls() == []
    assert recorder.endings == 1


def test_lines_split_across_reads(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    [process] = reactor.spawned
    data = b"\n".join(PARTIAL) + b"\n"
    for i in range(0, len(data), 7):
        process.protocol.outReceived(data[i:i + 7])
    assert recorder.result is not None
    assert "".join(e.text for e in recorder.events if isinstance(e, TextDelta)) == "MOCK REPLY to: hello"


def test_error_result_is_classified(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    reactor.spawned[0].emit(*sample_lines("cli-2.1.330/error-401-default-retries.jsonl"))
    assert recorder.error.code == "cli_not_logged_in"
    assert recorder.result is None


def test_exit_without_result_is_an_error_with_stderr(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    process.protocol.errReceived(b"Error: something broke\n")
    process.exit(1)
    assert recorder.error.status == 502
    assert "something broke" in recorder.error.message
    assert reactor.getDelayedCalls() == []


def test_process_that_lingers_after_result_is_terminated(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    process.emit(*PARTIAL)
    reactor.advance(5)
    assert process.signals == ["TERM"]
    reactor.advance(5)
    assert process.signals == ["TERM", "KILL"]
    process.exit(signal=9)
    assert recorder.endings == 1 and recorder.error is None
    assert reactor.getDelayedCalls() == []


def test_cancel_sends_term_then_kill_and_reports_nothing(runner, reactor):
    recorder = Recorder()
    run = runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    run.cancel()
    assert process.signals == ["TERM"]
    reactor.advance(4.9)
    assert process.signals == ["TERM"]
    reactor.advance(0.1)
    assert process.signals == ["TERM", "KILL"]
    process.exit(signal=9)
    assert recorder.endings == 0
    assert reactor.getDelayedCalls() == [] and runner.in_flight == 0


def test_term_is_enough_when_the_process_exits(runner, reactor):
    run = runner.submit(plan(), Recorder())
    process = reactor.spawned[0]
    run.cancel()
    process.exit(signal=15)
    reactor.advance(100)
    assert process.signals == ["TERM"]
    assert reactor.getDelayedCalls() == []


def test_idle_timeout_resets_on_output(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    reactor.advance(179)
    process.emit(PARTIAL[0])
    reactor.advance(179)
    assert recorder.error is None
    reactor.advance(1)
    assert (recorder.error.status, recorder.error.code) == (504, "cli_idle_timeout")
    assert process.signals == ["TERM"]
    process.exit(signal=15)
    assert reactor.getDelayedCalls() == []


def test_paused_client_does_not_count_as_idle(runner, reactor):
    recorder = Recorder()
    run = runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    run.pauseProducing()
    assert process.paused
    reactor.advance(300)
    assert recorder.error is None
    run.resumeProducing()
    assert not process.paused
    reactor.advance(180)
    assert recorder.error.code == "cli_idle_timeout"


def test_total_timeout(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    for _ in range(10):
        reactor.advance(60)
        process.emit(PARTIAL[0])
    assert (recorder.error.status, recorder.error.code) == (504, "cli_total_timeout")
    assert process.signals == ["TERM"]


def test_queue_then_429(runner, reactor):
    first, second, third = Recorder(), Recorder(), Recorder()
    runs = [runner.submit(plan(), r) for r in (first, second, third)]
    assert len(reactor.spawned) == 2 and runner.waiting == 1
    with pytest.raises(APIError) as caught:
        runner.submit(plan(), Recorder())
    assert (caught.value.status, caught.value.code) == (429, "queue_full")
    assert caught.value.retry_after is not None
    reactor.spawned[0].emit(*PARTIAL)
    reactor.spawned[0].exit(0)
    assert len(reactor.spawned) == 3 and runner.waiting == 0
    reactor.spawned[2].emit(*PARTIAL)
    assert third.result is not None
    assert runs[2].session.pid == reactor.spawned[2].pid


def test_cancel_while_queued_never_spawns(runner, reactor):
    runner.submit(plan(), Recorder())
    runner.submit(plan(), Recorder())
    queued = runner.submit(plan(), Recorder())
    queued.cancel()
    assert runner.waiting == 0 and queued.exited.called
    reactor.spawned[0].exit(1)
    assert len(reactor.spawned) == 2


def test_queued_request_times_out_in_total(runner, reactor):
    runner.submit(plan(), Recorder())
    runner.submit(plan(), Recorder())
    waiting = Recorder()
    runner.submit(plan(), waiting)
    reactor.advance(600)
    assert waiting.error.code == "cli_total_timeout"
    assert runner.waiting == 0


def test_spawn_failure_is_a_503(runner, reactor):
    reactor.fail_spawn = FileNotFoundError(2, "No such file or directory")
    recorder = Recorder()
    run = runner.submit(plan(), recorder)
    assert (recorder.error.status, recorder.error.code) == (503, "cli_unavailable")
    assert run.exited.called and runner.in_flight == 0
    assert reactor.getDelayedCalls() == []


def test_runaway_line_is_stopped(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    process.protocol._max_line = 1000
    process.protocol.outReceived(b"x" * 600)
    process.protocol.outReceived(b"x" * 600)
    assert recorder.error.status == 502
    assert process.signals == ["TERM"]


def test_stop_service_ends_everything(runner, reactor):
    runner.startService()
    recorders = [Recorder() for _ in range(3)]
    for r in recorders:
        runner.submit(plan(), r)
    stopped = runner.stopService()
    assert [r.error.code for r in recorders] == ["shutting_down"] * 3
    assert [p.signals for p in reactor.spawned] == [["TERM"], ["TERM"]]
    assert not stopped.called
    reactor.advance(5)
    assert [p.signals for p in reactor.spawned] == [["TERM", "KILL"]] * 2
    for p in reactor.spawned:
        p.exit(signal=9)
    assert stopped.called
    assert len(reactor.spawned) == 2
    with pytest.raises(APIError):
        runner.submit(plan(), Recorder())


def test_stop_service_gives_running_requests_the_grace_period(reactor, tmp_path):
    runner = Runner(reactor, max_concurrent=2, queue_size=1, kill_grace=5,
                    scratch_root=str(tmp_path), shutdown_grace=30)
    runner.startService()
    finishing, slow, queued = Recorder(), Recorder(), Recorder()
    for r in (finishing, slow, queued):
        runner.submit(plan(), r)
    stopped = runner.stopService()
    assert queued.error.code == "shutting_down"  # queued ones fail at once
    assert finishing.error is None and slow.error is None
    first, second = reactor.spawned
    reactor.advance(10)
    first.emit(*PARTIAL)
    first.exit(0)
    assert finishing.result.text == "MOCK REPLY to: hello"
    assert not stopped.called and second.signals == []
    reactor.advance(20)  # the grace period is over
    assert slow.error.code == "shutting_down" and second.signals == ["TERM"]
    second.exit(signal=15)
    fired = []
    stopped.addBoth(fired.append)
    assert fired == []  # until the responses have had a moment to reach their sockets
    reactor.advance(DRAIN_SECONDS)
    assert len(fired) == 1
    assert reactor.getDelayedCalls() == []


def test_usage_limit_reset_time_comes_from_the_rate_limit_event(runner, reactor):
    reactor.advance(1795266092 - 7200)  # two hours before the sample's reset
    recorder = Recorder()
    runner.submit(plan(), recorder)
    reactor.spawned[0].emit(*sample_lines("error-429-unified-5h-oauth.jsonl"))
    assert (recorder.error.status, recorder.error.code) == (429, "usage_limit_reached")
    assert recorder.error.retry_after == 7200


def submit_with_history(runner, reactor):
    body = {"model": "claude-haiku-4", "messages": [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"}]}
    recorder = Recorder()
    runner.submit(build_plan(parse_chat_request(body), CLISettings("/bin/claude"), {}), recorder)
    [process] = reactor.spawned
    return recorder, process


def test_history_is_replayed_one_acknowledged_turn_at_a_time(runner, reactor):
    recorder, process = submit_with_history(runner, reactor)
    first = [json.loads(line) for line in bytes(process.stdin).splitlines()]
    assert [(m["type"], m.get("shouldQuery")) for m in first] == [("user", False)]
    assert not process.stdin_closed  # more to come
    [ack] = sample_lines("cli-2.1.330/history-replay-acks.jsonl")[-1:]
    process.emit(ack)
    lines = [json.loads(line) for line in bytes(process.stdin).splitlines()]
    assert [(m["type"], m.get("shouldQuery")) for m in lines] == [
        ("user", False), ("assistant", None), ("user", None)]
    assert lines[1]["message"]["content"] == [{"type": "text", "text": "two"}]
    assert process.stdin_closed  # the last batch is written
    assert recorder.result is None and recorder.events == []  # the ack is not the answer
    process.emit(*PARTIAL)
    assert recorder.result.text == "MOCK REPLY to: hello"


def test_control_channel_serves_the_tools_and_holds_tool_calls(runner, reactor):
    body = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {
                "type": "object", "properties": {"path": {"type": "string"}}}}}]}
    recorder = Recorder()
    runner.submit(build_plan(parse_chat_request(body), CLISettings("/bin/claude"), {}), recorder)
    [process] = reactor.spawned
    sent = len(process.stdin)
    process.emit(*sample_lines("cli-2.1.330/tool-calls-held.jsonl"))
    answers = [json.loads(line) for line in bytes(process.stdin[sent:]).splitlines()]
    # initialize, notifications/initialized and tools/list answered; can_use_tool never.
    assert len(answers) == 3
    assert all(a["type"] == "control_response" and a["response"]["subtype"] == "success"
               for a in answers)
    listed = answers[2]["response"]["response"]["mcp_response"]["result"]["tools"]
    assert [t["name"] for t in listed] == ["read_file"]
    assert listed[0]["inputSchema"]["properties"] == {"path": {"type": "string"}}
    assert recorder.result is None and not process.signals
    assert not process.stdin_closed  # the CLI may still ask for the tools


def test_unknown_control_requests_get_an_error_answer(runner, reactor):
    body = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    # With tools stdin stays open: the CLI may ask things.
    runner.submit(build_plan(parse_chat_request(body), CLISettings("/bin/claude"), {}), Recorder())
    [process] = reactor.spawned
    sent = len(process.stdin)
    process.emit(b'{"type":"control_request","request_id":"r1","request":{"subtype":"ui_toast"}}')
    [answer] = [json.loads(line) for line in bytes(process.stdin[sent:]).splitlines()]
    assert answer["response"] == {"subtype": "error", "request_id": "r1",
                                  "error": "The proxy does not handle 'ui_toast'."}


def test_a_refused_history_message_fails_the_request(runner, reactor):
    recorder, process = submit_with_history(runner, reactor)
    sent = bytes(process.stdin)
    process.emit(sample_lines("cli-2.1.330/error-401-default-retries.jsonl")[-1])
    assert recorder.error.code == "cli_not_logged_in"
    assert bytes(process.stdin) == sent  # nothing more was replayed


def test_a_lone_surrogate_in_the_system_prompt_fails_that_run_alone(runner, reactor, tmp_path):
    bad = Recorder()
    run = runner.submit(plan(system="\ud800"), bad)
    assert (bad.error.status, bad.error.code) == (400, "invalid_text")
    assert run.exited.called and runner.in_flight == 0
    assert reactor.spawned == [] and os.listdir(tmp_path) == []
    assert reactor.getDelayedCalls() == []
    good = Recorder()
    runner.submit(plan(), good)
    reactor.spawned[0].emit(*PARTIAL)
    assert good.result is not None


def test_a_queued_run_that_cannot_start_does_not_stop_the_queue(runner, reactor, tmp_path):
    first, second = Recorder(), Recorder()
    runner.submit(plan(), first)
    runner.submit(plan(), second)
    broken, behind = Recorder(), Recorder()
    runner.queue_size = 2
    runner.submit(plan(system="\ud800"), broken)
    runner.submit(plan(), behind)
    assert runner.waiting == 2
    # The broken run starts inside the first one's release: the release finishes
    # (scratch dir removed, slot given back) and the queue goes on to `behind`.
    first_dir = reactor.spawned[0].path
    reactor.spawned[0].emit(*PARTIAL)
    reactor.spawned[0].exit(0)
    assert broken.error.code == "invalid_text"
    assert not os.path.exists(first_dir)
    assert runner.waiting == 0 and runner.in_flight == 2
    reactor.spawned[2].emit(*PARTIAL)
    assert behind.result is not None


def test_any_exception_while_starting_is_a_typed_failure(runner, reactor):
    reactor.fail_spawn = RuntimeError("a bug")
    recorder = Recorder()
    run = runner.submit(plan(), recorder)
    assert (recorder.error.status, recorder.error.code) == (500, "internal_error")
    assert run.exited.called and runner.in_flight == 0
    assert reactor.getDelayedCalls() == []


@define(eq=False)
class Exploding(Recorder):
    """A response that breaks on the first event it is given."""

    def cli_event(self, event):
        raise RuntimeError("a bug in the response")


def test_a_response_that_raises_fails_its_run_and_ends_the_process(runner, reactor):
    recorder = Exploding()
    run = runner.submit(plan(), recorder)
    process = reactor.spawned[0]
    process.emit(*PARTIAL)
    assert recorder.error.code == "internal_error"
    assert process.signals == ["TERM"]
    process.exit(signal=15)
    assert run.exited.called and runner.in_flight == 0
    assert reactor.getDelayedCalls() == []


def test_a_429_retried_by_the_cli_reaches_the_client_with_the_apis_wait(runner, reactor):
    recorder = Recorder()
    runner.submit(plan(), recorder)
    # Recorded with the API answering 429 and retry-after: 3; the CLI waited ~3.1 s.
    reactor.spawned[0].emit(*sample_lines("cli-2.1.330/error-429-retry-after-2-retries.jsonl"))
    assert (recorder.error.code, recorder.error.retry_after) == ("rate_limit_exceeded", 4)
