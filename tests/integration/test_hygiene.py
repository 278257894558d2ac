"""
Process hygiene: a real daemon (twistd in its own process) with four runs in
flight, stopped with SIGTERM or killed with SIGKILL; then its CLI processes
are counted. The fake CLI hangs as a CLI waiting on a silent API would.
"""

from __future__ import annotations

import signal
import sys
import threading

import pytest

from tests.integration.daemons import alive, start_twistd, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal and /proc are Linux's")
IN_FLIGHT = 4


def runs_in_flight(daemon, directive: str) -> list[threading.Thread]:
    """Four requests (two streamed) whose CLI never answers; returns once all four run."""
    threads = []
    for i in range(IN_FLIGHT):
        t = threading.Thread(target=lambda s=i % 2 == 0: _ignore(daemon, directive, s), daemon=True)
        t.start()
        threads.append(t)
    wait_for(lambda: daemon.health()["in_flight"] == IN_FLIGHT, 60, why=lambda: daemon.health())
    return threads


def _ignore(daemon, directive: str, stream: bool) -> None:
    try:
        daemon.chat(f"hello {directive}", stream=stream, timeout=120)
    except OSError:
        pass  # the daemon went away: that is the test


def test_sigkill_leaves_no_cli_process(tmp_path):
    daemon = start_twistd(tmp_path, "--warm", "0", "--max-concurrent", str(IN_FLIGHT))
    try:
        runs_in_flight(daemon, "[[fake:hang]]")
        wait_for(lambda: len(daemon.cli_runs()) == IN_FLIGHT, 30, why=lambda: daemon.cli_runs())
        clis = daemon.cli_runs()
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=30)
        wait_for(lambda: not alive(clis), 5,
                 why=lambda: f"{len(alive(clis))} CLI processes alive 5 s after SIGKILL")
        print(f"\nHYGIENE: SIGKILL with {IN_FLIGHT} runs in flight → no CLI process alive "
              f"within 5 s")
    finally:
        daemon.stop()


def test_sigterm_ends_every_cli_and_its_children(tmp_path):
    daemon = start_twistd(tmp_path, "--warm", "0", "--max-concurrent", str(IN_FLIGHT),
                          "--shutdown-grace", "0")
    try:
        runs_in_flight(daemon, "[[fake:hang_child]]")
        # Each CLI has a child of its own in its process group.
        wait_for(lambda: len(daemon.cli_runs()) == IN_FLIGHT and
                 len(daemon.cli_processes()) >= 2 * IN_FLIGHT, 30)
        everything = daemon.cli_processes()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0
        left = alive(everything)
        print(f"\nHYGIENE: SIGTERM with {IN_FLIGHT} runs in flight → exit 0, {len(left)} of "
              f"{len(everything)} CLI processes and their children left")
        assert left == []
    finally:
        daemon.stop()
