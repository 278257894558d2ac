"""
The tether: the exec wrapper, the record of CLI processes, and the start-up
sweep of the ones an earlier daemon left behind (known by pid and start time).
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from attrs import define

from claude_proxy.cli_lifetime import (
    CannotRun, Tether, record_name, same_start, start_time, util_linux_chain,
)
from claude_proxy.turn import start_error

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")
ROOT = Path(__file__).resolve().parent.parent
# The ways a CLI is tied to the daemon: util-linux's where it works (Linux), the Python wrapper everywhere.
WAYS = ["util-linux", "python"] if util_linux_chain() is not None else ["python"]


def tether(path, way: str) -> Tether:
    return Tether(str(path)) if way == "util-linux" else Tether(str(path), prefix=None)


@define
class Transport:
    pid: int | None


def sleeper() -> subprocess.Popen:
    """A stand-in for a CLI an earlier daemon started: a group leader of its own."""
    return subprocess.Popen(["sleep", "600"], start_new_session=True)


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
                    reason="util-linux's setpriv is Linux's")
def test_on_linux_with_util_linux_no_second_python_runs():
    assert Tether("unused.json").prefix == util_linux_chain() is not None


@pytest.mark.parametrize("way", WAYS)
def test_the_wrapper_runs_the_command_in_a_group_of_its_own(tmp_path, way):
    argv = tether(tmp_path / "record.json", way).argv(["/bin/sh", "-c", "echo $$; ps -o pgid= -p $$"])
    out = subprocess.run(argv, capture_output=True, check=True).stdout.split()
    pid, pgid = map(int, out)
    assert pid == pgid != os.getpgid(0)


@pytest.mark.parametrize("way", WAYS)
def test_the_wrapper_gives_up_when_its_daemon_is_not_its_parent(tmp_path, way):
    # Started by someone else than the daemon it names: the daemon died before
    # the parent-death signal was armed, so the command must not run at all.
    argv = tether(tmp_path / "r.json", way).argv(["/bin/echo", "ran"])
    argv[argv.index(str(os.getpid()))] = "1"
    done = subprocess.run(argv, capture_output=True)
    if sys.platform.startswith("linux"):
        assert done.returncode == 137 and done.stdout == b""
    else:
        assert done.stdout == b"ran\n"


# A stand-in daemon: it starts `sh` tied to itself, says the pid, and waits.
DAEMON = """
import subprocess, sys
from claude_proxy.cli_lifetime import Tether
tether = Tether(sys.argv[1]) if sys.argv[2] == "util-linux" else Tether(sys.argv[1], prefix=None)
child = subprocess.Popen(tether.argv(["/bin/sh", "-c", "echo tied; exec sleep 600"]))
print(child.pid, flush=True)
child.wait()
"""


@linux
@pytest.mark.parametrize("way", WAYS)
def test_a_cli_dies_with_its_daemon_even_after_sigkill(tmp_path, way):
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(tmp_path / "r.json"), way],
                              cwd=ROOT, stdout=subprocess.PIPE)
    try:
        # The pid and the CLI's "tied" (exec'd: past the prctl), in either order: both
        # processes write to the one pipe.
        lines = sorted([daemon.stdout.readline(), daemon.stdout.readline()])
        assert lines[1] == b"tied\n"
        cli = int(lines[0])
        exited = os.pidfd_open(cli)
        daemon.kill()
        assert select.select([exited], [], [], 30)[0] == [exited]
        os.close(exited)
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.parametrize("way", WAYS)
def test_a_cli_that_cannot_run_is_refused_before_anything_starts(tmp_path, way):
    runs = tether(tmp_path / "r.json", way)
    not_executable = tmp_path / "claude"
    not_executable.write_text("#!/bin/sh\n")
    for path, why in ((tmp_path / "gone", "No such file or directory"),
                      (tmp_path, "Permission denied"), (not_executable, "Permission denied")):
        with pytest.raises(CannotRun) as raised:
            runs.argv([str(path), "-p"])
        error = start_error(raised.value, str(path))
        assert (error.status, error.code) == (503, "cli_unavailable")
        assert error.message == f"The Claude Code CLI at {path} cannot run: {why}"


@linux
def test_start_time_tells_processes_apart():
    me = start_time(os.getpid())
    assert me is not None and me.startswith("ticks:")
    assert start_time(os.getpid()) == me
    assert start_time(2 ** 22 + 1) is None
    assert not same_start(me, None)
    assert same_start("epoch:100", "epoch:101") and not same_start("epoch:100", "epoch:103")


def test_record_names_follow_the_listen_addresses():
    assert record_name(["tcp:1", "unix:/a"]) == record_name(["unix:/a", "tcp:1"])
    assert record_name(["tcp:1"]) != record_name(["tcp:2"])


@linux
def test_the_record_lists_live_children_and_drops_reaped_ones(tmp_path):
    path = tmp_path / "state" / "record.json"
    tether = Tether(str(path))
    child, second = sleeper(), sleeper()
    try:
        transport = Transport(child.pid)
        tether.spawned(transport)
        record = json.loads(path.read_text())
        assert record["daemon"]["pid"] == os.getpid()
        assert record["children"] == [{"pid": child.pid, "start": start_time(child.pid)}]
        transport.pid = None  # reaped
        tether.spawned(Transport(second.pid))
        assert [c["pid"] for c in json.loads(path.read_text())["children"]] == [second.pid]
    finally:
        for p in (child, second):
            p.kill()
            p.wait()


@linux
def test_the_sweep_ends_what_an_earlier_daemon_left_and_nothing_else(tmp_path):
    path = tmp_path / "record.json"
    left, stranger = sleeper(), sleeper()
    try:
        path.write_text(json.dumps({
            "daemon": {"pid": 2 ** 22 + 1, "start": "ticks:1"},  # long gone
            "children": [
                {"pid": left.pid, "start": start_time(left.pid)},
                # The same pid with another start time: the pid was reused.
                {"pid": stranger.pid, "start": "ticks:1"},
                {"pid": 2 ** 22 + 2, "start": "ticks:5"},
            ]}))
        assert Tether(str(path)).sweep() == 1
        assert left.wait(timeout=30) == -signal.SIGKILL
        assert stranger.poll() is None
        assert json.loads(path.read_text())["children"] == []
    finally:
        for p in (left, stranger):
            p.kill()
            p.wait()


@linux
def test_the_sweep_leaves_a_live_daemons_processes_alone(tmp_path):
    path = tmp_path / "record.json"
    other_daemon, child = sleeper(), sleeper()
    try:
        path.write_text(json.dumps({
            "daemon": {"pid": other_daemon.pid, "start": start_time(other_daemon.pid)},
            "children": [{"pid": child.pid, "start": start_time(child.pid)}]}))
        assert Tether(str(path)).sweep() == 0
        assert child.poll() is None
    finally:
        for p in (other_daemon, child):
            p.kill()
            p.wait()


def test_an_unreadable_record_is_ignored(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("{not json")
    assert Tether(str(path)).sweep() == 0
    assert Tether(str(tmp_path / "missing.json")).sweep() == 0
