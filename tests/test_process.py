"""The CLI's ProcessProtocol: stdin's first batch in, stdout as lines, stderr bounded, the end."""

from attrs import define, field
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from claude_proxy.process import STDERR_KEEP_BYTES, LineProcessProtocol


@define
class Recorder:
    """A controller that writes down what it is told."""

    lines: list = field(factory=list)
    seen: int = 0
    too_long: int = 0
    ended: list = field(factory=list)

    def output_seen(self) -> None:
        self.seen += 1

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)

    def line_too_long(self) -> None:
        self.too_long += 1

    def process_ended(self, exit_code, signal, stderr) -> None:
        self.ended.append((exit_code, signal, stderr))


def started(max_line: int = 1000) -> tuple[LineProcessProtocol, Recorder, StringTransport]:
    recorder, transport = Recorder(), StringTransport()
    protocol = LineProcessProtocol(recorder, b'{"type":"user"}\n', max_line=max_line)
    protocol.makeConnection(transport)
    return protocol, recorder, transport


def test_the_first_batch_goes_in_and_stdin_stays_open():
    _, _, transport = started()
    assert transport.value() == b'{"type":"user"}\n'
    assert not transport.disconnecting  # the controller closes stdin, not the protocol


def test_lines_are_put_together_across_reads_and_blank_ones_skipped():
    protocol, recorder, _ = started()
    for chunk in (b'{"a"', b':1}\n\n{"b":2}\n{"c', b'":3}', b"\n"):
        protocol.outReceived(chunk)
    assert recorder.lines == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    assert recorder.seen == 4  # every read counts as output, whole line or not


def test_a_runaway_line_is_reported_once_and_dropped():
    protocol, recorder, _ = started(max_line=10)
    protocol.outReceived(b"x" * 6)
    protocol.outReceived(b"x" * 6)  # 12 bytes and no newline yet
    assert recorder.too_long == 1 and recorder.lines == []
    protocol.outReceived(b"ok\n")
    assert recorder.lines == [b"ok"]  # what came after the dropped part


def test_stderr_keeps_only_its_last_bytes():
    protocol, recorder, _ = started()
    protocol.errReceived(b"a" * STDERR_KEEP_BYTES)
    protocol.errReceived(b"the reason")
    protocol.processEnded(Failure(ProcessDone(0)))
    [(_, _, stderr)] = recorder.ended
    assert len(stderr) == STDERR_KEEP_BYTES and stderr.endswith("the reason")


def test_the_end_says_exit_code_or_signal():
    outcomes = []
    for reason in (ProcessDone(0), ProcessTerminated(exitCode=3),
                   ProcessTerminated(signal=9)):
        protocol, recorder, _ = started()
        protocol.errReceived("é".encode()[:1])  # half a character: replaced, not raised
        protocol.processEnded(Failure(reason))
        outcomes += recorder.ended
    assert outcomes == [(0, None, "\ufffd"), (3, None, "\ufffd"), (None, 9, "\ufffd")]
