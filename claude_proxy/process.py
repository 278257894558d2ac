"""
The CLI's ProcessProtocol: the first stdin batch in, stdout out as lines,
stderr kept bounded. It decides nothing; it feeds a controller (see
session.CLISession), which writes the rest of stdin and closes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

# A stdout line can be megabytes (a long final answer repeated in the result
# line); past this it is a runaway, not an answer.
MAX_LINE_BYTES = 64 * 1024 * 1024
# stderr matters only for explaining a failure: keep its last few KiB.
STDERR_KEEP_BYTES = 8 * 1024


class ProcessReactor(Protocol):
    """What running the CLI needs of the reactor: IReactorProcess and IReactorTime."""

    def spawnProcess(self, processProtocol: ProcessProtocol, executable: str,
                     args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                     path: str | None = None) -> IProcessTransport: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,
                  **kw: Any) -> IDelayedCall: ...

    def seconds(self) -> float: ...


class Controller(Protocol):
    def output_seen(self) -> None: ...

    def line_received(self, line: bytes) -> None: ...

    def line_too_long(self) -> None: ...

    def process_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None: ...


class LineProcessProtocol(ProcessProtocol):
    def __init__(self, controller: Controller, stdin: bytes,
                 max_line: int = MAX_LINE_BYTES) -> None:
        self._controller = controller
        self._stdin = stdin
        self._max_line = max_line
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._stderr = bytearray()

    def connectionMade(self) -> None:
        # stdin stays open: the CLI asks questions on the control channel
        # (MCP traffic) while it answers.
        self.transport.write(self._stdin)

    def outReceived(self, data: bytes) -> None:
        self._controller.output_seen()
        if b"\n" not in data:
            self._keep_partial(data)
            return
        *complete, rest = data.split(b"\n")
        if self._partial:
            self._partial.append(complete[0])
            complete[0] = b"".join(self._partial)
            self._partial = []
            self._partial_size = 0
        for line in complete:
            if line:
                self._controller.line_received(line)
        if rest:
            self._keep_partial(rest)

    def _keep_partial(self, data: bytes) -> None:
        self._partial_size += len(data)
        if self._partial_size > self._max_line:
            self._partial = []
            self._partial_size = 0
            self._controller.line_too_long()
            return
        self._partial.append(data)

    def errReceived(self, data: bytes) -> None:
        self._stderr += data
        if len(self._stderr) > STDERR_KEEP_BYTES:
            del self._stderr[:-STDERR_KEEP_BYTES]

    def processEnded(self, reason: Failure) -> None:
        exit_code, signal = 0, None
        if reason.check(ProcessTerminated):
            exit_code, signal = reason.value.exitCode, reason.value.signal
        self._controller.process_ended(
            exit_code, signal, self._stderr.decode("utf-8", "replace"))
