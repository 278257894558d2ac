"""
The warm pool with fake processes and a Clock: reuse, replacement, the
concurrency limit, TTL, dead processes, stopping.
"""

import json

import pytest

from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.pool import FORGET_AFTER, WarmPool
from claude_proxy.runner import DRAIN_SECONDS, Runner

from tests.fakes import sample_lines
from tests.test_runner import Recorder

PARTIAL = sample_lines("cli-2.1.330/stream-json-partial.jsonl")
READY = b'{"type":"control_response","response":{"subtype":"success","request_id":"proxy-initialize","response":{}}}'


def plan(system="be brief"):
    body = {"model": "claude-haiku-4", "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "hello"}]}
    return build_plan(parse_chat_request(body), CLISettings("/bin/claude"), {})


@pytest.fixture
def runner(reactor, tmp_path):
    runner = Runner(reactor, max_concurrent=2, queue_size=2, kill_grace=5,
                    scratch_root=str(tmp_path))
    runner.pool = WarmPool(reactor, size=1, ttl=600, scratch_root=str(tmp_path))
    runner.startService()
    return runner


def lines_written(process):
    return [json.loads(line) for line in bytes(process.stdin).splitlines()]


def finish(process):
    process.emit(*PARTIAL)
    process.exit(0)


def warmed(runner, reactor, shape="be brief"):
    """Two requests of one shape, answered cold; the second has the pool start one."""
    runner.submit(plan(shape), Recorder())
    first = reactor.spawned[-1]
    assert runner.pool.count == 0  # seen once: not warmed yet
    finish(first)
    runner.submit(plan(shape), Recorder())
    second, warm = reactor.spawned[-2:]
    finish(second)
    return warm


def test_a_request_of_a_repeated_shape_takes_a_ready_process(runner, reactor):
    warm = warmed(runner, reactor)
    # The pre-started one got only the initialize request: no user turn, so no API call.
    assert [m["type"] for m in lines_written(warm)] == ["control_request"]
    assert not warm.stdin_closed
    warm.emit(READY)
    assert runner.pool.snapshot().ready == 1

    recorder = Recorder()
    spawned = len(reactor.spawned)
    runner.submit(plan(), recorder)
    assert len(reactor.spawned) == spawned + 1  # the replacement only, no cold spawn
    assert [m["type"] for m in lines_written(warm)] == ["control_request", "user"]
    assert warm.stdin_closed  # no tools: nothing more to say
    finish(warm)
    assert recorder.result.text == "MOCK REPLY to: hello"
    assert runner.pool.count == 1 and runner.in_flight == 0
    seen = runner.pool.snapshot()
    assert (seen.hits, seen.misses) == (1, 2)


def test_other_shapes_spawn_cold_and_warm_processes_count_inside_the_limit(runner, reactor):
    warm_a = warmed(runner, reactor, "A")
    runner.submit(plan("B"), Recorder())
    runner.submit(plan("B"), Recorder())  # 2 running: the limit
    assert warm_a.signals == ["KILL"]  # gave its slot to B
    assert runner.in_flight == 2 and runner.pool.count == 0
    warm_a.exit(signal=9)
    finish(reactor.spawned[-1])
    assert runner.pool.count == 1 and runner.pool.has(plan("B"))


def test_a_process_that_died_while_waiting_is_never_handed_out(runner, reactor):
    warm = warmed(runner, reactor)
    warm.exit(1)
    assert runner.pool.count == 0
    recorder = Recorder()
    runner.submit(plan(), recorder)
    fresh = reactor.spawned[-2]  # cold for the request; the last is its replacement
    assert fresh is not warm and [m["type"] for m in lines_written(fresh)] == ["user"]
    finish(fresh)
    assert recorder.result is not None


def test_waiting_processes_are_recycled_after_the_ttl(runner, reactor):
    warm = warmed(runner, reactor)
    spawned = len(reactor.spawned)
    reactor.advance(600)
    assert warm.signals == ["KILL"] and len(reactor.spawned) == spawned + 1  # a fresh one
    warm.exit(signal=9)
    assert runner.pool.count == 1
    reactor.advance(FORGET_AFTER)  # a shape nobody asked for is forgotten
    reactor.spawned[-1].exit(signal=9)
    assert runner.pool.count == 0 and len(reactor.spawned) == spawned + 1


def test_stopping_kills_waiting_processes_and_leaves_no_timer(runner, reactor, tmp_path):
    warm = warmed(runner, reactor)
    stopped = runner.stopService()
    assert warm.signals == ["KILL"] and not stopped.called
    warm.exit(signal=9)
    reactor.advance(DRAIN_SECONDS)  # responses reach their sockets
    assert stopped.called
    assert reactor.getDelayedCalls() == []
    assert list(tmp_path.iterdir()) == []
