"""
Load: 64 concurrent streams over the three wire APIs against a real daemon
(twistd in its own process, the fake CLI replaying a recorded real stream)
with 4 CLI slots and a queue of 64; then a burst past the queue. Nothing is
lost, nothing is a 500, every answer is whole, the overflow is 429
`queue_full` with Retry-After, and afterwards no slot is held and no CLI
process is left.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.daemons import WIRE_APIS, Reply, ask, settled, start_twistd, wait_for

pytestmark = pytest.mark.slow

SLOTS, QUEUE = 4, 64
STREAMS = 64
# The burst: SLOTS runs held by a slow CLI, then more requests than the queue holds.
HOLD_GAP = 0.3  # seconds between the slow fake CLI's 12 lines: ~3.6 s a held run
BURST = QUEUE + 16
ANSWER = "MOCK REPLY to: hello"  # the recorded stream's answer
DEADLINE = 120.0  # a request not answered by then is lost


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_twistd(tmp_path_factory.mktemp("load"), "--warm", "0",
                     "--max-concurrent", str(SLOTS), "--queue", str(QUEUE))
    yield d
    d.stop()


def many(daemon, prompts: list[tuple[str, str]], stream: bool = True) -> list[Reply]:
    """All at once, one thread each: (api, prompt) → the reply, in order."""
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        return list(pool.map(lambda p: ask(daemon, p[0], p[1], stream, DEADLINE), prompts))


def assert_whole(reply: Reply) -> None:
    assert reply.status == 200 and reply.streamed and reply.problems == (), reply
    assert reply.complete and reply.text == ANSWER, reply


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def test_64_concurrent_streams_then_a_burst_past_the_queue(daemon):
    # 64 streams, the three APIs in turn: 4 run, 60 wait their turn.
    started = time.monotonic()
    replies = many(daemon, [(WIRE_APIS[i % 3], "hello") for i in range(STREAMS)])
    wall = time.monotonic() - started
    statuses = Counter(r.status for r in replies)
    latencies = [r.elapsed for r in replies]
    print(f"\nLOAD: {STREAMS} concurrent streams (chat, responses, messages) through "
          f"{SLOTS} slots in {wall:.1f} s; statuses {dict(statuses)}; latency p50 "
          f"{percentile(latencies, 50):.2f} s, p95 {percentile(latencies, 95):.2f} s")
    assert statuses[0] == 0, "lost requests"
    assert statuses[500] == 0
    for reply in replies:
        assert_whole(reply)  # within the queue: none refused either
    wait_for(lambda: settled(daemon), 30, why=lambda: (daemon.health(), daemon.cli_processes()))

    # The burst: the slots held by slow runs, then more than the queue holds at once.
    with ThreadPoolExecutor(max_workers=1 + BURST) as pool:
        held = pool.submit(many, daemon, [(WIRE_APIS[i % 3], f"hello [[fake:slow {HOLD_GAP}]]")
                                          for i in range(SLOTS)])
        wait_for(lambda: daemon.health()["in_flight"] == SLOTS, 30, why=lambda: daemon.health())
        started = time.monotonic()
        burst = many(daemon, [(WIRE_APIS[i % 3], "hello") for i in range(BURST)])
        wall = time.monotonic() - started
        held = held.result()
    statuses = Counter(r.status for r in burst)
    refused = [r for r in burst if r.status == 429]
    print(f"LOAD: burst of {BURST} while {SLOTS} slow runs hold the slots (queue {QUEUE}): "
          f"{statuses[200]} answered whole, {len(refused)} × 429 queue_full, in {wall:.1f} s; "
          f"statuses {dict(statuses)}")
    for reply in held:
        assert_whole(reply)
    assert statuses[0] == 0 and statuses[500] == 0
    assert set(statuses) <= {200, 429}, statuses
    # The queue took what it holds; the rest was refused at once, with when to come back.
    assert statuses[200] >= QUEUE and refused, statuses
    for reply in burst:
        if reply.status == 200:
            assert_whole(reply)
    for reply in refused:
        assert reply.problems == () and int(reply.headers["retry-after"]) >= 1, reply
        if reply.error["code"] is None:  # Anthropic's shape has no code
            assert reply.error["type"] == "rate_limit_error", reply
        else:
            assert reply.error["code"] == "queue_full", reply
        assert "waiting" in reply.error["message"], reply

    # Afterwards: every slot given back, nothing queued, no CLI process left.
    wait_for(lambda: settled(daemon), 30, why=lambda: (daemon.health(), daemon.cli_processes()))
    health = daemon.health()
    print(f"LOAD: afterwards {health['in_flight']} slots held, {health['queued']} queued, "
          f"{len(daemon.cli_processes())} CLI processes")
