"""
The fault matrix: each fault of the CLI and of the API, streamed and not, on
each wire API, against real daemons (twistd in its own process). CLI faults
come from the fake CLI (it replays recorded real CLI output, and crashes,
hangs, garbles on request); API faults from the real CLI against the mock API.

Every cell must end typed (the status and code of docs/how-it-works.md's
table, in the path's API error shape; once a stream has begun, its API's error
event), within its timeout, and never as a 200 whose answer is empty or
truncated yet marked complete. All cells run at once (the slow ones are the
timeouts, which a serial run would add up); each is then checked on its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from attrs import frozen

from claude_proxy.writers import HOLD_HEADERS_SECONDS
from tests.integration.daemons import (
    FAKE_CLI, WIRE_APIS, RealDaemon, Reply, ask, login, start_mock_api, start_twistd, wait_for,
)

pytestmark = pytest.mark.slow

# Short timeouts so the hang cases end quickly. The fake CLI starts in ~0.1 s,
# the real one in ~0.5 s, but on 2 busy cores both can take seconds: the total
# leaves a silent CLI's idle timer room to fire first even when it started late.
FAKE_IDLE, FAKE_TOTAL = 6, 20
API_IDLE, API_TOTAL = 10, 60
SLOW_GAP = 2.0  # seconds between the slow fake CLI's 12 lines: never idle, always over FAKE_TOTAL
HOLD_HEADERS = HOLD_HEADERS_SECONDS
BUSY_AT_ONCE = 4  # cells asked at once, besides those waiting for a timeout
# "Did not hang": a cell that waits for a timeout ends within this much of it.
SLACK = 20.0
# The answer both the recorded sample and the mock API give to "hello".
ANSWER = "MOCK REPLY to: hello"
THIRD_PARTY = ("Third-party apps now draw from your extra usage, not your plan limits. "
               "Add more at claude.ai/settings/usage and keep going.")
USAGE_RESET_IN = 3600

# The status of an Anthropic-shaped error, and its type, for an OpenAI-shaped one's
# (docs/how-it-works.md: overloaded is 529 there).
ANTHROPIC_TYPES = {400: "invalid_request_error", 403: "permission_error",
                   404: "not_found_error", 429: "rate_limit_error", 529: "overloaded_error"}


@frozen
class Fault:
    name: str
    daemon: str  # which of the Fleet's daemons answers it
    prompt: str
    status: int  # 200: the answer must come whole; else the typed failure's status
    code: str | None = None
    # Streamed, if different: (status, code, whether the stream has begun when it fails).
    stream: tuple[int, str | None, bool] | None = None
    retry_after: tuple[int, int] | None = None  # the Retry-After range, when not yet streaming
    waits: str | None = None  # "idle" or "total": it ends by that timeout, not long after
    # The wire APIs whose stream says it as an event from the start (Responses: a short
    # rate limit, which Codex waits out and retries only so).
    streamed_by: tuple[str, ...] = ()
    bug: str | None = None  # a daemon bug this cell shows: a strict xfail

    def expected(self, stream: bool) -> tuple[int, str | None, bool]:
        if stream and self.stream is not None:
            return self.stream
        return self.status, self.code, False


FAULTS = [
    # The CLI misbehaves (the fake CLI).
    Fault("crash", "fake", "[[fake:crash]]", 502, "cli_error"),
    Fault("killed by a signal", "fake", "[[fake:signal]]", 502, "cli_error"),
    Fault("garbage on stdout", "fake", "[[fake:garbage]]", 502, "cli_error"),
    Fault("4 MiB of stderr", "fake", "[[fake:stderr_flood]]", 502, "cli_error"),
    Fault("exits halfway", "fake", "[[fake:half]]", 502, "cli_error",
          stream=(502, "cli_error", True)),
    Fault("silent from the start", "fake", "[[fake:hang]]", 504, "cli_idle_timeout",
          waits="idle"),
    Fault("silent halfway", "fake", "[[fake:half_hang]]", 504, "cli_idle_timeout",
          stream=(504, "cli_idle_timeout", True), waits="idle"),
    Fault("too slow", "fake", f"[[fake:slow {SLOW_GAP}]]", 504, "cli_total_timeout",
          stream=(504, "cli_total_timeout", True), waits="total"),
    Fault("no exit after its result", "fake", "[[fake:linger]]", 200),
    Fault("not logged in", "fake", "[[fake:sample not-logged-in.jsonl]]", 503,
          "cli_not_logged_in"),
    Fault("retried answer differs (recorded)", "fake",
          "[[fake:sample cli-2.1.330/midstream-error-fallback.jsonl]]", 200,
          stream=(502, "stream_interrupted", True)),
    Fault("cannot be spawned", "gone", "", 503, "cli_unavailable"),
    # The API misbehaves (the real CLI against the mock API).
    Fault("API 401", "api", "[[mock:error status=401]]", 503, "cli_not_logged_in"),
    Fault("API 429", "api", "[[mock:error status=429]]", 429, "rate_limit_exceeded",
          retry_after=(1, 60), streamed_by=("responses",)),
    Fault("API 429 retry-after 2", "api", "[[mock:error status=429 retry_after=2]]", 429,
          "rate_limit_exceeded", retry_after=(2, 5), streamed_by=("responses",)),
    Fault("API 400 prompt too long", "api", "[[mock:error status=400 "
          'message="prompt is too long: 210000 tokens > 200000 maximum"]]', 400,
          "context_length_exceeded"),
    Fault("API 400 invalid request", "api",
          '[[mock:error status=400 message="max_tokens: 100000 > 64000"]]', 400, "invalid_request"),
    Fault("API 500", "api", "[[mock:error status=500]]", 502, "upstream_error"),
    Fault("API 529", "api", "[[mock:error status=529]]", 503, "upstream_overloaded",
          retry_after=(10, 10)),
    Fault("API stream breaks, retry differs", "api", "[[mock:midstream_error]]", 200,
          stream=(502, "stream_interrupted", True)),
    Fault("API stalls", "api", "[[mock:stall]]", 504, "cli_idle_timeout",
          stream=(504, "cli_idle_timeout", True), waits="idle"),
    Fault("API unreachable", "refused", "", 502, "upstream_unreachable"),
    Fault("subscription 5-hour limit", "usage",
          "[[mock:error status=429 unified_reset={reset} unified_claim=five_hour]]", 429,
          "usage_limit_reached", retry_after=(USAGE_RESET_IN - 600, USAGE_RESET_IN)),
    Fault("third-party apps need extra usage", "third_party",
          f'[[mock:error status=400 message="{THIRD_PARTY}"]]', 403, "extra_usage_required"),
]


@frozen
class Cell:
    fault: Fault
    stream: bool
    api: str

    @property
    def id(self) -> str:
        return f"{self.fault.name}-{'stream' if self.stream else 'body'}-{self.api}"

    def prompt(self) -> str:
        return "hello " + self.fault.prompt.format(reset=int(time.time()) + USAGE_RESET_IN)


CELLS = [Cell(f, s, a) for f in FAULTS for s in (False, True) for a in WIRE_APIS]


def cell_param(cell: Cell):
    marks = [pytest.mark.xfail(strict=True, reason=cell.fault.bug)] if cell.fault.bug else []
    return pytest.param(cell, id=cell.id, marks=marks)


class Fleet:
    """The daemons the matrix needs, started on first use (concurrently), and the mock API."""

    def __init__(self, tmp: Path, cli: str):
        self.tmp, self.cli = tmp, cli
        self.mock = None
        self.daemons: dict[str, RealDaemon] = {}
        self._lock = threading.Lock()
        self._starting: dict[str, threading.Event] = {}

    def _mock_url(self) -> str:
        with self._lock:
            if self.mock is None:
                self.mock = start_mock_api()
            return self.mock.base_url

    def get(self, name: str) -> RealDaemon:
        with self._lock:
            first = name not in self._starting
            if first:
                self._starting[name] = threading.Event()
        if first:
            try:
                self.daemons[name] = self._start(name)
            finally:
                self._starting[name].set()
        self._starting[name].wait()
        return self.daemons[name]  # KeyError: it failed to start (see the first error)

    def _start(self, name: str) -> RealDaemon:
        tmp = self.tmp / name
        common = ("--warm", "0", "--queue", "256")
        if name in ("fake", "gone"):
            cli = FAKE_CLI
            if name == "gone":
                # A CLI that is there at start-up and gone by the first request.
                cli = tmp / "claude"
                tmp.mkdir()
                cli.write_text(f"#!/bin/sh\nexec '{FAKE_CLI}' \"$@\"\n")
                cli.chmod(0o755)
            daemon = start_twistd(tmp, *common, "--max-concurrent", "48",
                                  "--idle-timeout", str(FAKE_IDLE), "--timeout", str(FAKE_TOTAL),
                                  cli=str(cli))
            if name == "gone":
                cli.unlink()
            return daemon
        env = {}
        base_url = "http://127.0.0.1:9" if name == "refused" else self._mock_url()  # 9: nothing
        args = [*common, "--max-concurrent", "8", "--idle-timeout", str(API_IDLE),
                "--timeout", str(API_TOTAL), "--cli-retries", "1",
                "--cli-env", f"ANTHROPIC_BASE_URL={base_url}"]
        if name in ("usage", "third_party"):
            # A subscription login; its profile call goes to the real API host: fail it offline.
            (tmp / "home" / ".claude").mkdir(parents=True)
            login(tmp / "home")
            env = {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}
        else:
            args += ["--cli-env", "ANTHROPIC_API_KEY=sk-test"]
        return start_twistd(tmp, *args, cli=self.cli, env=env)

    def stop(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop()
        if self.mock is not None:
            self.mock.stop()


def deadline(cell: Cell) -> float:
    """How long a client waits before calling the cell hung."""
    return (FAKE_TOTAL if cell.fault.daemon in ("fake", "gone") else API_TOTAL) + SLACK


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, cli_path):
    fleet = Fleet(tmp_path_factory.mktemp("faults"), cli_path)
    yield fleet
    fleet.stop()


@pytest.fixture(scope="module")
def replies(request, fleet) -> dict[str, Reply]:
    """Every selected cell's reply; the cells are asked concurrently."""
    wanted = [item.callspec.params["cell"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")
              and "cell" in item.callspec.params]
    with ThreadPoolExecutor(max_workers=8) as pool:  # daemons start in parallel
        list(pool.map(fleet.get, sorted({c.fault.daemon for c in wanted})))

    def one(cell: Cell) -> Reply:
        return ask(fleet.get(cell.fault.daemon), cell.api, cell.prompt(), cell.stream,
                   deadline(cell))

    # The cells that wait for a timeout cost no CPU while they wait: all at once. The
    # rest a few at a time: on 2 shared cores dozens of CLIs starting together take
    # seconds to say anything, which the idle timeout would rightly call silence.
    waiting = [c for c in wanted if c.fault.waits is not None]
    busy = [c for c in wanted if c.fault.waits is None]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, len(waiting))) as waiters, \
            ThreadPoolExecutor(max_workers=BUSY_AT_ONCE) as workers:
        waited = waiters.map(one, waiting)
        answers = dict(zip([c.id for c in busy], workers.map(one, busy)))
        answers.update(zip([c.id for c in waiting], waited))
    FIGURES["wall"] = time.monotonic() - started
    return answers


FIGURES: dict = {"outcomes": Counter(), "cells": 0, "wall": 0.0}


def anthropic_status(status: int, code: str | None) -> int:
    return 529 if code == "upstream_overloaded" else status


def anthropic_type(status: int, code: str | None) -> str:
    return ANTHROPIC_TYPES.get(anthropic_status(status, code), "api_error")


def check(cell: Cell, reply: Reply) -> str:
    """Assert what the cell must show; returns its outcome's name for the figure."""
    fault = cell.fault
    status, code, began = fault.expected(cell.stream)
    assert reply.status != 0, f"no answer within {deadline(cell):g} s: {reply.problems}"
    assert reply.problems == (), reply.problems
    # Never an empty or truncated answer passed off as complete.
    if reply.complete:
        assert reply.text == ANSWER, f"a 'complete' answer that is not the answer: {reply.text!r}"
    if fault.waits is not None:
        timeout = {"fake": {"idle": FAKE_IDLE, "total": FAKE_TOTAL},
                   "api": {"idle": API_IDLE, "total": API_TOTAL}}[fault.daemon][fault.waits]
        assert timeout - 0.5 <= reply.elapsed <= timeout + SLACK, reply.elapsed
    if status == 200:
        assert (reply.status, reply.complete, reply.text) == (200, True, ANSWER), reply
        return "whole answer"
    assert not reply.complete and reply.finish not in ("stop", "completed", "end_turn"), reply
    error = reply.error
    assert error is not None, reply
    if began:
        # The stream had begun: a 200, then the API's error event as its end.
        assert reply.streamed and reply.ended, reply
    elif reply.streamed and cell.api not in fault.streamed_by:
        # Not begun by the API, but the daemon sends a stream's headers after holding them
        # HOLD_HEADERS seconds (clients' watchdogs want bytes): then the error is an event.
        assert reply.elapsed >= HOLD_HEADERS - 0.5, reply
    if cell.api == "messages":  # Anthropic's shape: a type for each status, no code
        wanted = (anthropic_status(status, code), anthropic_type(status, code))
        got = error["type"]
    else:
        wanted, got = (status, code), error["code"]
    assert got == wanted[1], error["message"]
    if not reply.streamed:
        assert reply.status == wanted[0], error["message"]
    if fault.retry_after is not None and not reply.streamed:
        low, high = fault.retry_after
        assert low <= int(reply.headers.get("retry-after", -1)) <= high, reply.headers
    if fault.name == "4 MiB of stderr":
        assert len(error["message"]) < 1000, "not a short excerpt"
    return "typed error event" if reply.streamed else "typed status"


@pytest.mark.parametrize("cell", [cell_param(c) for c in CELLS])
def test_fault(cell, replies):
    FIGURES["cells"] += 1
    outcome = "failed (see its test)"
    try:
        outcome = check(cell, replies[cell.id])
    except AssertionError:
        if cell.fault.bug:
            outcome = "known bug (xfail)"
        raise
    finally:
        FIGURES["outcomes"][outcome] += 1


def test_health_answers_once_the_cli_is_gone(fleet):
    daemon = fleet.get("gone")
    # Its first /health (start-up waits for the port, not /health): it probes the missing CLI.
    response = daemon.request("GET", "/health", timeout=5)  # a missing file fails at once
    assert response.status == 503 and "No such file" in response.json()["cli"]["error"], response


def metric(daemon: RealDaemon, name: str) -> float:
    """A gauge from /metrics (which, unlike /health, runs no probe)."""
    for line in daemon.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_afterwards_nothing_is_held(fleet, replies):
    """
    Every daemon of the matrix: no slot held, nothing queued, and no CLI process left but
    the live sessions kept for a next turn (a CLI that answered and waits, as the real one
    does and the lingering fake one plays).
    """
    def idle(name: str, daemon: RealDaemon) -> bool:
        if metric(daemon, "claude_proxy_cli_processes") or metric(daemon,
                                                                  "claude_proxy_queue_depth"):
            return False
        live = daemon.health().get("sessions", {}).get("live", 0)
        return len(daemon.cli_processes()) == live

    for name, daemon in fleet.daemons.items():
        wait_for(lambda: idle(name, daemon), 30, why=lambda: (name, daemon.cli_processes()))


def test_third_party_refusal_is_said_the_same_way_twice(fleet):
    """A single account refused as a third-party app is not skipped: the next request is
    told the same (no timer ends this refusal; the user adding extra usage does)."""
    daemon = fleet.get("third_party")
    prompt = f'hello [[mock:error status=400 message="{THIRD_PARTY}"]]'
    codes = [ask(daemon, "chat", prompt, False).error for _ in range(2)]
    assert [(e["status"], e["code"]) for e in codes] == [(403, "extra_usage_required")] * 2, codes


def test_figure(replies):
    outcomes = FIGURES["outcomes"]
    apis = len({c.api for c in CELLS})
    print(f"\nFAULTS: {FIGURES['cells']} cells ({len(FAULTS)} faults × 2 modes × {apis} APIs) "
          f"in {FIGURES['wall']:.1f} s: "
          + ", ".join(f"{n} {k}" for k, n in outcomes.most_common()))
    slowest = max(replies.values(), key=lambda r: r.elapsed, default=None)
    if slowest is not None:
        print(f"FAULTS: slowest cell {slowest.elapsed:.1f} s (timeouts: fake CLI idle "
              f"{FAKE_IDLE} s, total {FAKE_TOTAL} s; real CLI idle {API_IDLE} s)")
    assert FIGURES["cells"] == len(replies)
