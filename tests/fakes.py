"""
In-memory stand-ins for the reactor's process support, driven by the tests
with lines the real CLI printed (tests/samples/).
"""

from __future__ import annotations

import json
from pathlib import Path

from attrs import define, field
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

SAMPLES = Path(__file__).parent / "samples"


def sample_lines(name: str) -> list[bytes]:
    """The non-empty lines of a recorded real-CLI stdout sample."""
    return [line.encode() for line in (SAMPLES / name).read_text().splitlines() if line.strip()]


def sample_json(name: str) -> list[dict]:
    return [json.loads(line) for line in sample_lines(name)]


@define(eq=False)
class FakeProcess:
    protocol: ProcessProtocol
    executable: str
    args: list[str]
    env: dict
    path: str | None
    pid: int = 4242
    stdin: bytearray = field(factory=bytearray)
    stdin_closed: bool = False
    signals: list[str] = field(factory=list)
    paused: bool = False
    ended: bool = False

    # -- IProcessTransport, as much as the proxy uses

    def write(self, data: bytes) -> None:
        self.stdin += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    # -- what the test makes the process do

    def emit(self, *lines: bytes) -> None:
        self.protocol.outReceived(b"".join(line + b"\n" for line in lines))

    def exit(self, code: int = 0, signal: int | None = None) -> None:
        self.ended = True
        if code == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code if signal is None else None, signal))
        self.protocol.processEnded(reason)


@define(eq=False)
class FakeProcessReactor(Clock):
    """A Clock that also "spawns" FakeProcesses (IReactorTime + IReactorProcess)."""

    spawned: list[FakeProcess] = field(factory=list)
    fail_spawn: OSError | None = None

    def __attrs_post_init__(self) -> None:
        Clock.__init__(self)

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None, **kw):
        if self.fail_spawn is not None:
            raise self.fail_spawn
        process = FakeProcess(protocol, executable, list(args), dict(env or {}), path)
        self.spawned.append(process)
        protocol.makeConnection(process)
        return process
