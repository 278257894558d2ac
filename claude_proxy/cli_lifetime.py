"""
Tying each CLI process's life to the daemon's.

- Every CLI is started through a small exec chain (Twisted's spawnProcess has
  no preexec hook) that puts it in a session and process group of its own (so
  a signal reaches the CLI's own children too, and a Ctrl-C at the daemon's
  terminal is the daemon's to handle) and, on Linux, asks the kernel to
  SIGKILL it when the daemon dies (PR_SET_PDEATHSIG), however the daemon dies.
  On Linux that is util-linux's setsid(1) and setpriv(1) (~2 ms a spawn);
  elsewhere, or where those cannot do it, a second Python (~15-25 ms).
- A CLI that cannot be exec'd (gone since start-up) is found before the spawn:
  the run fails with cli_unavailable and nothing is started.
- A record (pid and start time of each CLI, and of the daemon) is kept in the
  state directory; a daemon that starts where an earlier one was killed ends
  the CLI processes that one left behind. They are known by pid *and* start
  time, never by name: a pid the system has since given to another process is
  left alone. (This is what cleans up on macOS, which has no parent-death
  signal.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from attrs import define, field
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport
from twisted.logger import Logger

from claude_proxy.errors import CANNOT_RUN

log = Logger()

PR_SET_PDEATHSIG = 1
# Run as `python -I -S -c WRAPPER <daemon pid> <argv...>`. A CLI it cannot exec
# (gone between the check in Tether.argv and the exec) is said on stderr after
# CANNOT_RUN, exit 127, so the request gets cli_unavailable rather than the
# wrapper's traceback. After the prctl it checks that the daemon is still its
# parent: had the daemon died between the fork and the prctl, nothing would
# ever send the signal.
WRAPPER = """\
import os, sys
os.setsid()
if sys.platform.startswith("linux"):
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(%d, %d)
    if os.getppid() != int(sys.argv[1]):
        sys.exit(137)
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as e:
    sys.stderr.write("%s %%s: %%s\\n" %% (sys.argv[2], e.strerror))
    sys.exit(127)
""" % (PR_SET_PDEATHSIG, signal.SIGKILL, CANNOT_RUN)

# The same on Linux without a second interpreter: setsid(1) (never --fork: the
# CLI must keep the pid Twisted knows; a fresh child is no group leader, so it
# does not fork), setpriv(1) --pdeathsig, then /bin/sh (its $0 the daemon's
# pid) makes WRAPPER's parent check, since setpriv has none.
PARENT_CHECK = '[ "$PPID" = "$0" ] || exit 137; exec "$@"'


def util_linux_chain() -> list[str] | None:
    """
    The argv prefix that ties a command to this process with util-linux,
    or None where that does not work here (not Linux; no setsid or setpriv;
    util-linux before 2.33 has no --pdeathsig; a sandbox forbidding prctl).
    Tried once, on a command whose exit code only the whole chain gives.
    """
    if not sys.platform.startswith("linux"):
        return None
    setsid, setpriv = shutil.which("setsid"), shutil.which("setpriv")
    if setsid is None or setpriv is None:
        return None
    chain = [setsid, setpriv, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", PARENT_CHECK]
    try:
        tried = subprocess.run([*chain, str(os.getpid()), "/bin/sh", "-c", "exit 42"],
                               capture_output=True, env={}, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return chain if tried.returncode == 42 else None


class CannotRun(OSError):
    """The CLI cannot be exec'd; said as the system would say it (`No such file or directory`)."""

    def __str__(self) -> str:
        return self.strerror


def check_runnable(path: str) -> None:
    """Raise CannotRun when execve(path) would fail for want of a runnable file."""
    try:
        found = os.stat(path)
    except OSError as e:
        raise CannotRun(e.errno, e.strerror, path) from None
    if not stat.S_ISREG(found.st_mode) or not os.access(path, os.X_OK):
        raise CannotRun(errno.EACCES, os.strerror(errno.EACCES), path)


# ps's start times are to the second, and a fork is recorded just after it happened.
START_SLACK_SECONDS = 2.0


def start_time(pid: int) -> str | None:
    """
    When a process started, in a form that tells two processes with the same
    pid apart: Linux's start time in clock ticks since boot; elsewhere ps's
    start time to the second. None when there is no such process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        return _ps_start(pid)
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has no process left to end
    return "ticks:" + fields[19].decode()


def _ps_start(pid: int) -> str | None:
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True,
                             env={"LC_ALL": "C", "PATH": os.defpath}, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.decode("ascii", "replace").strip()
    if not text:
        return None
    try:
        return "epoch:%d" % datetime.strptime(text, "%a %b %d %H:%M:%S %Y").timestamp()
    except ValueError:
        return None


def same_start(recorded: str, now: str | None) -> bool:
    if now is None:
        return False
    if recorded.startswith("epoch:") and now.startswith("epoch:"):
        return abs(float(recorded[6:]) - float(now[6:])) <= START_SLACK_SECONDS
    return recorded == now


def listen_digest(listen: Sequence[str]) -> str:
    """A name for a set of --listen addresses: two daemons cannot share those."""
    return hashlib.sha256("\n".join(sorted(listen)).encode("utf-8")).hexdigest()[:16]


def record_name(listen: Sequence[str]) -> str:
    """One record per set of --listen addresses."""
    return f"children-{listen_digest(listen)}.json"


def default_state_dir(environ: Any) -> str:
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "claude-proxy")


def send_signal(tether: Tether | None, transport: IProcessTransport, name: str) -> None:
    """SIG`name` to a CLI: to its group when it was started tied, else to it alone."""
    if tether is None:
        transport.signalProcess(name)
    else:
        tether.signal(transport, name)


@define
class Tether:
    """Starts CLI processes tied to the daemon, signals their groups, keeps the record."""

    record_path: str
    python: str = sys.executable
    # The util-linux chain, or None for the Python wrapper.
    prefix: list[str] | None = field(factory=util_linux_chain)
    _children: dict = field(factory=dict)  # pid -> (transport, start time)
    _me: tuple[int, str | None] | None = None  # this daemon: pid, start time

    def __attrs_post_init__(self) -> None:
        log.info("CLI processes are tied to the daemon by {how}",
                 how="the Python exec wrapper" if self.prefix is None else "setsid + setpriv")

    def argv(self, argv: Sequence[str]) -> list[str]:
        """
        The command line that runs `argv` tied to this daemon; CannotRun (an
        OSError: the run fails with cli_unavailable) when argv[0] cannot run.
        """
        check_runnable(argv[0])
        # The pid now, not at construction: twistd forks to daemonize after making the service.
        if self.prefix is not None:
            return [*self.prefix, str(os.getpid()), *argv]
        return [self.python, "-I", "-S", "-c", WRAPPER, str(os.getpid()), *argv]

    def spawned(self, transport: IProcessTransport) -> None:
        pid = transport.pid
        if pid is None:
            return
        started = start_time(pid)
        if started is not None:
            self._children[pid] = (transport, started)
        self._write()

    def signal(self, transport: IProcessTransport, name: str) -> None:
        """SIG`name` to the process's whole group (it leads its own)."""
        pid = transport.pid
        if pid is None:
            raise ProcessExitedAlready()
        try:
            os.killpg(pid, getattr(signal, f"SIG{name}"))
        except ProcessLookupError:
            # The group is gone (or not made yet: the wrapper has not run setsid).
            transport.signalProcess(name)

    def _write(self) -> None:
        # Reaped processes drop out here (Twisted clears a transport's pid then).
        self._children = {pid: entry for pid, entry in self._children.items()
                          if entry[0].pid is not None}
        pid, started = self._daemon()
        record = {"daemon": {"pid": pid, "start": started},
                  "children": [{"pid": p, "start": s} for p, (_, s) in self._children.items()]}
        try:
            os.makedirs(os.path.dirname(self.record_path), mode=0o700, exist_ok=True)
            partial = f"{self.record_path}.{pid}.tmp"
            with open(partial, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(partial, self.record_path)
        except OSError as e:
            log.warn("Could not write the record of CLI processes {path}: {error}",
                     path=self.record_path, error=str(e))

    def _daemon(self) -> tuple[int, str | None]:
        # Known on first use: twistd forks to daemonize after the Tether is made.
        if self._me is None or self._me[0] != os.getpid():
            self._me = (os.getpid(), start_time(os.getpid()))
        return self._me

    def sweep(self) -> int:
        """
        End the CLI processes an earlier daemon with this record left running;
        returns how many. A record of a daemon still alive is not touched.
        """
        try:
            with open(self.record_path, encoding="utf-8") as f:
                record = json.load(f)
            daemon = record["daemon"]
            children = [(int(c["pid"]), str(c["start"])) for c in record["children"]]
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warn("Ignoring an unreadable record of CLI processes {path}: {error}",
                     path=self.record_path, error=str(e))
            return 0
        if daemon.get("pid") != os.getpid() and daemon.get("start") is not None \
                and same_start(str(daemon["start"]), start_time(int(daemon["pid"]))):
            log.warn("Another claude-proxy (pid {pid}) still owns {path}; its processes are "
                     "left alone", pid=daemon["pid"], path=self.record_path)
            return 0
        ended = 0
        for pid, started in children:
            if not same_start(started, start_time(pid)):
                continue  # gone, or the pid is someone else's now
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                try:  # killed before its wrapper made it a group leader
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue
            except PermissionError:
                continue
            ended += 1
        if ended:
            log.info("Ended {count} CLI process(es) left behind by an earlier claude-proxy",
                     count=ended)
        self._write()
        return ended
