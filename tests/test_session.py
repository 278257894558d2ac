"""
One CLI process and its stream-json conversation (session.py), on its own:
fake processes replaying what the real CLI 2.1.330 printed, and a Clock.
"""

import json
import os

import pytest
from attrs import define, field
from twisted.logger import capturedLogs

from claude_proxy.continuation import ToolResult
from claude_proxy.models import Aliases
from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.plan import CLISettings, TurnSettings, build_plan
from claude_proxy.session import ENDED, IDLE, READY, STARTING, TOOLS, TURN, CLISession

from tests.fakes import sample_lines

TOOLS_SPEC = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
              for n in ("read", "exec")]


@define(eq=False)
class Listener:
    events: list = field(factory=list)
    ended: list = field(factory=list)
    broken: int = 0

    def session_output(self):
        pass

    def session_event(self, event):
        self.events.append(event)

    def session_broken(self):
        self.broken += 1

    def session_ended(self, exit_code, signal, stderr):
        self.ended.append((exit_code, signal))


def session_for(reactor, tmp_path, tools=False, **body):
    request = parse_chat_request({"model": "claude-sonnet-4", "tools": TOOLS_SPEC if tools else [],
                                  "messages": [{"role": "user", "content": "go"}], **body})
    plan = build_plan(request, CLISettings("/bin/claude"), {})
    session = CLISession(reactor, plan, str(tmp_path), aliases=Aliases())
    listener = Listener()
    session.attach(listener)
    return session, listener


def written(process, since=0):
    return [json.loads(line) for line in bytes(process.stdin[since:]).splitlines()]


def test_a_pre_started_session_is_ready_once_the_cli_answers_initialize(reactor, tmp_path):
    session, _ = session_for(reactor, tmp_path)
    session.start()
    [process] = reactor.spawned
    assert session.state == STARTING
    [initialize] = written(process)
    assert initialize["request"]["subtype"] == "initialize"
    process.emit(*sample_lines("cli-2.1.330/initialize.jsonl"))
    # Ready, and what its aliases run is known.
    assert session.state == READY and session.aliases.get("sonnet") == "claude-sonnet-5-5"


def test_a_turn_with_other_settings_gives_them_to_the_running_cli_first(reactor, tmp_path):
    session, listener = session_for(reactor, tmp_path)
    session.start([b'{"type":"user"}\n'], settings=TurnSettings(None, None))
    [process] = reactor.spawned
    assert process.env["CLAUDE_CODE_DISABLE_THINKING"] == "1" and "--effort" not in process.args
    process.emit(*sample_lines("cli-2.1.330/live-turn-1.jsonl"))
    assert session.state == IDLE
    sent = len(process.stdin)
    session.send([b'{"type":"user","n":2}\n'], TurnSettings(None, None))
    assert written(process, sent) == [{"type": "user", "n": 2}]  # the same settings: nothing more
    sent = len(process.stdin)
    session.send([b'{"type":"user","n":3}\n'], TurnSettings("high", 900))
    control, line = written(process, sent)
    assert control == {"type": "control_request", "request_id": "settings-1", "request": {
        "subtype": "apply_flag_settings", "settings": {"effortLevel": "high", "env": {
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "900", "CLAUDE_CODE_DISABLE_THINKING": ""}}}}
    assert line == {"type": "user", "n": 3} and session.settings == TurnSettings("high", 900)
    assert session.state == TURN


def test_held_tool_calls_wait_for_their_results(reactor, tmp_path):
    session, listener = session_for(reactor, tmp_path, tools=True)
    session.start([b'{"type":"user"}\n'])
    [process] = reactor.spawned
    process.emit(*sample_lines("cli-2.1.330/live-tools-held.jsonl"))
    assert session.state == TOOLS and len(session.pending_calls) == 2
    first, second = session.pending_calls
    sent = len(process.stdin)
    session.give_results([ToolResult(first, ({"type": "text", "text": "A"},)),
                          ToolResult(second, ({"type": "text", "text": "B"},), is_error=True)])
    [allow] = written(process, sent)
    assert allow["response"]["response"]["behavior"] == "allow" and session.state == TURN
    sent = len(process.stdin)
    process.emit(*sample_lines("cli-2.1.330/live-tools-first-result.jsonl"))
    answered, allow_second = written(process, sent)
    assert answered["response"]["response"]["mcp_response"]["result"] == {
        "content": [{"type": "text", "text": "A"}]}
    assert allow_second["response"]["response"]["behavior"] == "allow"
    sent = len(process.stdin)
    process.emit(*sample_lines("cli-2.1.330/live-tools-second-result.jsonl"))
    [answered] = written(process, sent)
    assert answered["response"]["response"]["mcp_response"]["result"]["isError"] is True
    assert session.state == IDLE and session.pending_calls == ()


def test_end_is_term_then_kill_and_exit_cleans_up(reactor, tmp_path):
    session, listener = session_for(reactor, tmp_path)
    session.start([b'{"type":"user"}\n'])
    [process] = reactor.spawned
    workdir = process.path
    session.end(grace=5)
    assert process.signals == ["TERM"] and not session.alive
    reactor.advance(5)
    assert process.signals == ["TERM", "KILL"]
    process.exit(None, signal=9)
    assert session.state == ENDED and listener.ended == [(None, 9)]
    assert session.exited.called and not os.path.exists(workdir)
    assert reactor.getDelayedCalls() == []


def test_an_exit_before_the_kill_cancels_it(reactor, tmp_path):
    session, _ = session_for(reactor, tmp_path)
    session.start([b'{"type":"user"}\n'])
    [process] = reactor.spawned
    session.end(grace=5)
    process.exit(143)
    assert process.signals == ["TERM"] and reactor.getDelayedCalls() == []


def test_a_refused_settings_request_is_logged(reactor, tmp_path):
    session, _ = session_for(reactor, tmp_path)
    session.start([b'{"type":"user"}\n'])
    [process] = reactor.spawned
    with capturedLogs() as logs:
        process.emit(json.dumps({"type": "control_response", "response": {
            "subtype": "error", "request_id": "settings-1", "error": "Unknown setting"}}).encode())
    [warning] = [e for e in logs if e.get("request_id") == "settings-1"]
    assert warning["error"] == "Unknown setting" and session.state == TURN


@pytest.mark.parametrize("listening", [True, False])
def test_a_runaway_line_ends_the_session(reactor, tmp_path, listening):
    session, listener = session_for(reactor, tmp_path)
    if not listening:
        session.detach()
    session.start([b'{"type":"user"}\n'])
    [process] = reactor.spawned
    session.line_too_long()
    # A listener fails its request and ends the session; a waiting session is killed.
    assert (listener.broken, process.signals) == ((1, []) if listening else (0, ["KILL"]))
