"""
Live sessions in memory: the runner, CLISession and LiveSessions with fake
processes replaying what the real CLI printed over one kept session
(tests/samples/cli-2.1.330/live-*), and a Clock.
"""

import json

import pytest
from attrs.exceptions import FrozenInstanceError

from claude_proxy.answer import Answer
from claude_proxy.continuation import canonical_id, continuation_of
from claude_proxy.live_sessions import LiveSessions
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.runner import DRAIN_SECONDS, Runner
from claude_proxy.writers import BufferedWriter

from tests.fakes import sample_lines

TURN_1 = sample_lines("cli-2.1.330/live-turn-1.jsonl")
TURN_2 = sample_lines("cli-2.1.330/live-turn-2.jsonl")
HELD = sample_lines("cli-2.1.330/live-tools-held.jsonl")
FIRST_RESULT = sample_lines("cli-2.1.330/live-tools-first-result.jsonl")
SECOND_RESULT = sample_lines("cli-2.1.330/live-tools-second-result.jsonl")
INITIALIZED = sample_lines("cli-2.1.330/initialize.jsonl")
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
         for n in ("read", "exec")]


@pytest.fixture
def runner(reactor, tmp_path):
    runner = Runner(reactor, max_concurrent=2, queue_size=2, kill_grace=5,
                    scratch_root=str(tmp_path))
    runner.sessions = LiveSessions(reactor, size=2, ttl=60)
    runner.startService()
    return runner


def ask(runner, messages, key="k", tools=None, **extra):
    """Submit a Chat request as the app does; returns its writer."""
    body = {"model": "claude-sonnet-4", "messages": messages, **extra}
    if tools:
        body["tools"] = tools
    request = parse_chat_request(body)
    plan = build_plan(request, CLISettings("/bin/claude"), {})
    writer = BufferedWriter(ChatEncoder("c", "m", 0), answer=Answer())
    writer.done.addErrback(lambda f: None)
    writer.begin(runner.submit(plan, writer, continuation_of(plan, request, key)))
    return writer


def written(process, since=0):
    return [json.loads(line) for line in bytes(process.stdin[since:]).splitlines()]


def reply(writer):
    return writer.done.result["choices"][0]["message"]


FIRST = [{"role": "user", "content": "hello"}]


def first_turn(runner, reactor):
    writer = ask(runner, FIRST)
    [process] = reactor.spawned
    process.emit(*TURN_1)
    return writer, process


def test_a_follow_up_continues_the_live_session(runner, reactor):
    writer, process = first_turn(runner, reactor)
    assert reply(writer)["content"] == "MOCK REPLY to: hello"
    # Kept: no signal, stdin open, no slot held, no timer but the session's time to live.
    assert not process.signals and not process.stdin_closed
    assert (runner.in_flight, runner.sessions.count) == (0, 1)
    assert len(reactor.getDelayedCalls()) == 1
    sent = len(process.stdin)
    second = ask(runner, FIRST + [{"role": "assistant", "content": "MOCK REPLY to: hello"},
                                  {"role": "user", "content": "and more"}])
    assert len(reactor.spawned) == 1  # no new CLI
    [line] = written(process, sent)  # only the new message
    assert line["type"] == "user" and line["message"]["content"] == [
        {"type": "text", "text": "and more"}] and "shouldQuery" not in line
    assert runner.sessions.snapshot().continued == 1 and runner.in_flight == 1
    process.emit(*TURN_2)
    assert reply(second)["content"] == "MOCK REPLY to: and more"
    assert (runner.in_flight, runner.sessions.count) == (0, 1)


def test_a_follow_up_with_other_settings_continues_with_them_in_place(runner, reactor):
    writer, process = first_turn(runner, reactor)
    sent = len(process.stdin)
    ask(runner, FIRST + [{"role": "assistant", "content": "MOCK REPLY to: hello"},
                         {"role": "user", "content": "think"}],
        reasoning_effort="high", max_tokens=64)
    assert len(reactor.spawned) == 1 and runner.sessions.snapshot().continued == 1
    settings, line = written(process, sent)  # the settings, then the message
    assert settings["type"] == "control_request" and settings["request"] == {
        "subtype": "apply_flag_settings", "settings": {"effortLevel": "high", "env": {
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64", "CLAUDE_CODE_DISABLE_THINKING": ""}}}
    assert line["type"] == "user"


def test_tool_results_continue_with_thinking_on_as_the_loop_began(runner, reactor):
    writer = ask(runner, [{"role": "user", "content": "go"}], tools=TOOLS, reasoning_effort="low")
    [process] = reactor.spawned
    assert "CLAUDE_CODE_DISABLE_THINKING" not in process.env
    process.emit(*HELD)
    calls = reply(writer)["tool_calls"]
    sent = len(process.stdin)
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": None, "tool_calls": calls},
               {"role": "tool", "tool_call_id": calls[0]["id"], "content": "A"},
               {"role": "tool", "tool_call_id": calls[1]["id"], "content": "B"}]
    # The client asks for thinking again, and an OpenAI client never sends it back:
    # a cold replay would have to turn it off; the live session keeps it.
    ask(runner, history, tools=TOOLS, reasoning_effort="low")
    assert len(reactor.spawned) == 1 and runner.sessions.snapshot().continued == 1
    [allow] = written(process, sent)  # no settings: nothing changed
    assert allow["response"]["response"]["behavior"] == "allow"


def test_the_cli_says_what_its_aliases_run_and_later_plans_use_it(runner, reactor):
    ask(runner, [{"role": "user", "content": "go"}], tools=TOOLS)
    [process] = reactor.spawned
    assert process.args[process.args.index("--model") + 1] == "sonnet"
    process.emit(*INITIALIZED)
    assert runner.aliases.get("sonnet") == "claude-sonnet-5-5"
    request = parse_chat_request({"model": "claude-sonnet-4", "messages": FIRST})
    plan = build_plan(request, CLISettings("/bin/claude"), {}, runner.aliases)
    assert plan.model == "claude-sonnet-5-5"


@pytest.mark.parametrize("over, why", [
    ({}, "thinking_changed"), ({"reasoning_effort": "high"}, "effort_changed"),
    ({"reasoning_effort": "low", "max_tokens": 50}, "max_tokens_changed")])
def test_tool_results_with_other_settings_are_replayed(runner, reactor, over, why):
    # A turn held on tool calls goes on with the settings it began with (CLI 2.1.330).
    writer = ask(runner, [{"role": "user", "content": "go"}], tools=TOOLS, reasoning_effort="low")
    [process] = reactor.spawned
    process.emit(*HELD)
    calls = reply(writer)["tool_calls"]
    ask(runner, [{"role": "user", "content": "go"},
                 {"role": "assistant", "content": None, "tool_calls": calls},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "A"},
                 {"role": "tool", "tool_call_id": calls[1]["id"], "content": "B"}],
        tools=TOOLS, **over)
    assert len(reactor.spawned) == 2 and runner.sessions.snapshot().fallbacks == {why: 1}


def test_tool_results_go_to_the_held_calls_and_the_turn_goes_on(runner, reactor):
    writer = ask(runner, [{"role": "user", "content": "go"}], tools=TOOLS)
    [process] = reactor.spawned
    process.emit(*HELD)
    message = reply(writer)
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["read", "exec"]
    assert runner.sessions.snapshot().waiting_for_tools == 1 and runner.in_flight == 0
    sent = len(process.stdin)
    # The client sends them back re-serialized: its own call ids, SDK extras.
    results = ask(runner, [{"role": "user", "content": "go"},
                           {"role": "assistant", "content": None, "annotations": [],
                            "tool_calls": message["tool_calls"]},
                           {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"],
                            "content": "A"},
                           {"role": "tool", "tool_call_id": message["tool_calls"][1]["id"],
                            "content": "B"}], tools=TOOLS)
    assert len(reactor.spawned) == 1 and runner.sessions.snapshot().continued == 1
    [allow] = written(process, sent)
    assert allow["response"]["request_id"] == "1c36a06a-fcb1-462d-a106-4ad4bf5ffe08"
    assert allow["response"]["response"] == {"behavior": "allow", "updatedInput": {"path": "a"}}
    sent = len(process.stdin)
    process.emit(*FIRST_RESULT)
    first, allow_second = written(process, sent)
    assert first["response"]["response"]["mcp_response"] == {
        "jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "A"}]}}
    assert allow_second["response"]["request_id"] == "566f3103-c11f-4dae-afb7-80bf1e7a03ec"
    sent = len(process.stdin)
    process.emit(*SECOND_RESULT)
    [second] = written(process, sent)
    assert second["response"]["response"]["mcp_response"]["result"]["content"] == [
        {"type": "text", "text": "B"}]
    answered = results.done.result
    assert answered["choices"][0]["message"]["content"] == "MOCK REPLY to: "
    # Its own message's usage, not the CLI turn's two API calls summed.
    assert answered["usage"]["completion_tokens"] == 7
    assert runner.sessions.count == 1 and runner.sessions.snapshot().waiting_for_tools == 0


@pytest.mark.parametrize("change, why", [
    ("edited", "no_session"), ("regenerated", "no_session"), ("key", "key_changed"),
    ("system", "system_changed"), ("tools", "tools_changed")])
def test_what_differs_is_never_continued(runner, reactor, change, why):
    first_turn(runner, reactor)
    history = [{"role": "user", "content": "hello"},
               {"role": "assistant", "content": "MOCK REPLY to: hello"},
               {"role": "user", "content": "and more"}]
    key, tools = "k", None
    if change == "edited":
        history[0]["content"] = "hullo"
    elif change == "regenerated":
        history[1]["content"] = "another answer"
    elif change == "key":
        key = "another key"
    elif change == "system":
        history.insert(0, {"role": "system", "content": "be terse"})
    elif change == "tools":
        tools = TOOLS
    ask(runner, history, key=key, tools=tools)
    assert len(reactor.spawned) == 2  # a cold run, replaying the history
    seen = runner.sessions.snapshot()
    assert seen.continued == 0 and seen.fallbacks == {why: 1}


def test_results_that_are_not_the_held_calls_fall_back(runner, reactor):
    writer = ask(runner, [{"role": "user", "content": "go"}], tools=TOOLS)
    reactor.spawned[0].emit(*HELD)
    calls = reply(writer)["tool_calls"]
    ask(runner, [{"role": "user", "content": "go"},
                 {"role": "assistant", "content": None, "tool_calls": calls},
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": "A"}], tools=TOOLS)
    assert len(reactor.spawned) == 2 and runner.sessions.snapshot().fallbacks == {"tool_results": 1}


def test_an_idle_session_ends_after_its_time_to_live(runner, reactor):
    _, process = first_turn(runner, reactor)
    reactor.advance(60)
    assert process.signals == ["KILL"] and runner.sessions.count == 0
    process.exit(signal=9)
    assert reactor.getDelayedCalls() == [] and runner.sessions.snapshot().ended == {"ttl": 1}


def test_a_snapshot_is_a_value_that_later_counting_leaves_alone(runner, reactor):
    _, process = first_turn(runner, reactor)
    before = runner.snapshot()
    reactor.advance(60)
    process.exit(signal=9)
    assert (before.sessions.live, before.sessions.ended) == (1, {})
    after = runner.snapshot()
    assert (after.running, after.warm, after.sessions.live, after.sessions.ended) == \
        (0, None, 0, {"ttl": 1})
    with pytest.raises(FrozenInstanceError):
        before.sessions.live = 2


def test_a_request_that_needs_the_slot_evicts_the_least_recent(runner, reactor):
    runner.max_concurrent = 1
    _, process = first_turn(runner, reactor)
    ask(runner, [{"role": "user", "content": "another conversation"}])
    assert process.signals == ["KILL"]  # never waits behind an idle session
    assert len(reactor.spawned) == 2 and runner.in_flight == 1 and runner.waiting == 0
    process.exit(signal=9)
    assert runner.sessions.count == 0 and runner.sessions.snapshot().ended == {"room": 1}


def test_a_client_gone_mid_turn_ends_the_session(runner, reactor):
    _, process = first_turn(runner, reactor)
    second = ask(runner, FIRST + [{"role": "assistant", "content": "MOCK REPLY to: hello"},
                                  {"role": "user", "content": "and more"}])
    process.emit(*TURN_2[:4])
    second.done.cancel()
    assert process.signals == ["TERM"]
    process.exit(signal=15)
    assert (runner.in_flight, runner.sessions.count) == (0, 0)
    assert reactor.getDelayedCalls() == []


def test_a_failed_turn_is_not_kept(runner, reactor):
    _, process = first_turn(runner, reactor)
    second = ask(runner, FIRST + [{"role": "assistant", "content": "MOCK REPLY to: hello"},
                                  {"role": "user", "content": "and more"}])
    process.emit(sample_lines("cli-2.1.330/error-500-no-retries.jsonl")[-1])
    assert second.error.status >= 500
    assert process.stdin_closed and runner.sessions.count == 0
    process.exit(1)
    assert runner.in_flight == 0 and reactor.getDelayedCalls() == []


def test_stopping_ends_live_sessions(runner, reactor):
    _, process = first_turn(runner, reactor)
    stopped = runner.stopService()
    assert process.signals == ["KILL"] and not stopped.called
    process.exit(signal=9)
    reactor.advance(DRAIN_SECONDS)  # responses reach their sockets
    assert stopped.called and reactor.getDelayedCalls() == []


def test_without_sessions_the_cli_is_ended_as_before(runner, reactor):
    runner.sessions = None
    writer, process = first_turn(runner, reactor)
    assert writer.done.called and process.stdin_closed  # closed once written: nothing to ask


def test_canonical_ids():
    assert canonical_id("toolu_01Ab") == canonical_id("calltoolu01Ab") == "toolu01Ab"


def test_live_sessions_leave_the_warm_pool_its_slots(reactor, tmp_path):
    from claude_proxy.pool import WarmPool
    runner = Runner(reactor, max_concurrent=2, kill_grace=5, scratch_root=str(tmp_path))
    runner.sessions = LiveSessions(reactor, size=3, ttl=60)
    runner.pool = WarmPool(reactor, size=1, ttl=600, scratch_root=str(tmp_path))
    runner.startService()
    for i in range(2):
        ask(runner, [{"role": "user", "content": f"conversation {i}"}])
        reactor.spawned[-1].emit(*TURN_1)
    # Two live sessions would fill both slots: the older one gives way to the pool.
    assert runner.sessions.count == 1 and runner.sessions.snapshot().ended == {"room": 1}
