"""
What tying a CLI to the daemon costs per spawn: each way of doing it exec'ing
/bin/true, started as the daemon starts its CLIs (Twisted's spawnProcess with a
working directory of its own, so Twisted forks), timed from spawnProcess to the
process's end; interleaved, medians of -n each.

  bare          /bin/true itself (no session, no parent-death signal)
  python        the Python exec wrapper (tether.WRAPPER): a second interpreter
  util-linux    setsid(1) + setpriv(1) --pdeathsig KILL + /bin/sh's parent check
                (what tether.Tether uses on Linux)
  ... no check  the same without /bin/sh (leaves the fork-to-prctl race open)
  in the child  setsid and prctl in Twisted's forked child before its exec: no
                second program at all, but a subclass of Twisted's Process
                overriding its private _execChild (for comparison only)

    python bench/spawn.py -n 200
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import process, protocol, reactor  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402

from claude_proxy.cli_lifetime import PR_SET_PDEATHSIG, Tether  # noqa: E402

TRUE = shutil.which("true") or "/bin/true"


class InTheChild(process.Process):
    """setsid + PR_SET_PDEATHSIG between Twisted's fork and exec (private API: bench only)."""

    def _execChild(self, path, uid, gid, executable, args, environment):
        os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.daemon_pid:
            os._exit(137)
        super()._execChild(path, uid, gid, executable, args, environment)


class Ended(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()

    def processEnded(self, reason) -> None:
        self.done.callback(reason.value.exitCode)


def ways(record: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (argv, whether to spawn it through InTheChild)."""
    util_linux = Tether(record)
    python = Tether(record, prefix=None)
    found = {"bare": ([TRUE], False), "python": (python.argv([TRUE]), False)}
    if util_linux.prefix is not None:
        found["util-linux"] = (util_linux.argv([TRUE]), False)
        found["util-linux, no check"] = (util_linux.prefix[:5] + [TRUE], False)
    if sys.platform.startswith("linux"):
        found["in the child"] = ([TRUE], True)
    return found


@inlineCallbacks
def measure(n: int, results: dict[str, list[float]]):
    workdir = tempfile.mkdtemp(prefix="claude-proxy-spawn-")
    try:
        found = ways(os.path.join(workdir, "record.json"))
        results.update({name: [] for name in found})
        names = list(found)
        for i in range(n):
            for name in names if i % 2 == 0 else names[::-1]:
                argv, in_child = found[name]
                ended = Ended()
                started = time.perf_counter()
                if in_child:
                    proc = InTheChild.__new__(InTheChild)
                    proc.daemon_pid = os.getpid()
                    proc.__init__(reactor, argv[0], argv, {}, workdir, ended)
                else:
                    reactor.spawnProcess(ended, argv[0], argv, env={}, path=workdir)
                code = yield ended.done
                results[name].append(time.perf_counter() - started)
                if code != 0:
                    raise SystemExit(f"{name}: exit {code}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        reactor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="spawns per way")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    reactor.callWhenRunning(measure, args.n, results)
    reactor.run()
    bare = statistics.median(results["bare"])
    print(f"n = {args.n} spawns of {TRUE} each, interleaved\n")
    print("| way | median | p95 | over bare /bin/true |")
    print("| --- | --- | --- | --- |")
    for name, samples in results.items():
        med = statistics.median(samples)
        p95 = statistics.quantiles(samples, n=20)[-1]
        print(f"| {name} | {med * 1000:.2f} ms | {p95 * 1000:.2f} ms | "
              f"{(med - bare) * 1000:+.2f} ms |")


if __name__ == "__main__":
    main()
