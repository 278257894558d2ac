"""
The two ways a run's events become an HTTP response, for any wire API: a
server-sent event stream, or one buffered JSON body. The API's front door
gives the Encoder that says what the bytes are.

Both are RunConsumers; both expose `done`, a Deferred the route returns, which
fires when the response is written (or fails with the APIError to render) and
whose cancellation (the client went away) ends the CLI run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.web.iweb import IRequest

from claude_proxy.answer import Answer, Out
from claude_proxy.errors import APIError
from claude_proxy.events import Event, MessageStart, RateLimit, Result, Usage

# Until the API has accepted the request, a failure can still be a real HTTP
# status (401 → 503, usage limit → 429 with Retry-After); headers wait for
# message_start, or at most this long, so clients' watchdogs see bytes.
HOLD_HEADERS_SECONDS = 10.0
# Something on the wire at least this often while the CLI is silent (long thinking).
HEARTBEAT_SECONDS = 15.0

STREAM_DIVERGED = APIError(
    502, "The Claude API's stream broke after part of this answer was sent, and the retry "
         "answered differently: the text sent so far is not the answer. Retry the request.",
    "server_error", "stream_interrupted")


class RunHandle(Protocol):
    """What a writer may tell the run it consumes."""

    def delivered(self, answer: Answer | None) -> None:
        """The answer is delivered (None: a failed one): the run decides what becomes of its CLI."""

    def cancel(self) -> None:
        """The client went away: end the run."""

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


class Encoder(Protocol):
    """One wire API's shapes for one response."""

    def body(self, answer: Answer) -> dict:
        """The whole response of a complete answer (not streamed)."""

    def opening(self, answer: Answer) -> bytes:
        """A stream's first events, once the response is committed."""

    def outs(self, outs: list[Out]) -> bytes:
        """The events for pieces of the answer, as they come."""

    def closing(self, answer: Answer) -> bytes:
        """A stream's last events, the answer being complete."""

    def failure(self, error: APIError) -> bytes:
        """A stream's last events when it fails after the response was committed."""

    def streams_failure(self, error: APIError) -> bool:
        """Whether a failure before the stream began still goes out as a stream, not a status."""

    def heartbeat(self) -> bytes:
        """Bytes to send while the CLI is silent."""


@define(eq=False)
class _Ending:
    """What every writer shares: the `done` Deferred, cancellable into the run."""

    encoder: Encoder
    done: Deferred = field(init=False)
    answer: Answer = field(factory=Answer, kw_only=True)
    # Called when the first content, reasoning or tool call is known (time to first token).
    on_output: Callable[[], None] | None = field(default=None, kw_only=True)
    # Called with the account's quota when the CLI reports it before the answer ends.
    on_quota: Callable[[RateLimit], None] | None = field(default=None, kw_only=True)
    run: RunHandle | None = field(default=None, init=False)
    usage: Usage | None = field(default=None, init=False)
    error: APIError | None = field(default=None, init=False)
    committed: bool = field(default=False, init=False)  # bytes of the response have gone out
    quota_seen: bool = field(default=False, init=False)
    _answered: bool = field(default=False, init=False)  # early: the rest is not the answer's

    def __attrs_post_init__(self) -> None:
        self.done = Deferred(self._cancelled)

    def begin(self, run: RunHandle) -> None:
        """The run is submitted: from now on a cancellation ends it."""
        self.run = run

    @property
    def early(self) -> bool:
        """Whether the answer was whole before the CLI's turn ended."""
        return self._answered

    def _cancelled(self, _: Deferred) -> None:
        self._stop()
        if self.run is not None:
            self.run.cancel()

    def _stop(self) -> None:
        """Cancel the writer's timers."""

    def _feed(self, event: Event) -> list[Out]:
        outs = self.answer.feed(event)
        if outs and self.on_output is not None:
            self.on_output()
            self.on_output = None
        return outs

    def _watched(self, event: Event) -> bool:
        """Whether an event is not the answer's: the quota report, or anything after it."""
        if isinstance(event, RateLimit):
            self.quota_seen = True
            if self.on_quota is not None:
                self.on_quota(event)
            return True
        return self._answered

    def _delivered(self, early: bool = False) -> None:
        """
        The answer is delivered: the run keeps its session for the conversation's
        next request, or ends it (an early answer: before the CLI goes on).
        """
        self._answered = early
        if self.run is not None:
            self.run.delivered(self.answer if self.error is None else None)


@define(eq=False)
class BufferedWriter(_Ending):
    """One JSON body, sent when the answer is complete."""

    def cli_event(self, event: Event) -> None:
        if self._watched(event):
            return
        self._feed(event)
        if self.answer.complete:
            self._respond()
            self._delivered(early=True)

    def cli_finished(self, result: Result) -> None:
        if self._answered:
            return
        self.answer.result(result)
        if self.answer.error is not None:
            self.cli_failed(self.answer.error)
            return
        self._respond()
        self._delivered()

    def _respond(self) -> None:
        self.usage = self.answer.usage
        self.done.callback(self.encoder.body(self.answer))

    def cli_failed(self, error: APIError) -> None:
        if self._answered:
            return
        self.error = error
        self.done.errback(error)


@define(eq=False)
class StreamWriter(_Ending):
    """Server-sent events as the CLI's deltas arrive, then the API's closing events."""

    request: IRequest
    reactor: IReactorTime
    hold: float = HOLD_HEADERS_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    _timer: IDelayedCall | None = field(default=None, init=False)
    _last_write: float = field(default=0.0, init=False)

    def begin(self, run: RunHandle) -> None:
        super().begin(run)
        if self.done.called:  # the run failed before it could start
            return
        self._timer = self.reactor.callLater(self.hold, self._commit)

    def _commit(self) -> None:
        if self.committed:
            return
        self.committed = True
        self._stop()
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        # Deltas are small writes: without this, Nagle's algorithm holds each one
        # until the client's delayed ACK (tens of ms per token).
        transport = getattr(request.channel, "transport", None)
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        if self.run is not None:
            request.registerProducer(self.run, True)
        self._write(self.encoder.opening(self.answer))
        self._timer = self.reactor.callLater(self.heartbeat, self._beat)

    def _write(self, data: bytes) -> None:
        if not data:
            return
        self._last_write = self.reactor.seconds()
        self.request.write(data)

    def _beat(self) -> None:
        quiet = self.reactor.seconds() - self._last_write
        if quiet >= self.heartbeat:
            self._write(self.encoder.heartbeat())
            quiet = 0.0
        self._timer = self.reactor.callLater(self.heartbeat - quiet, self._beat)

    def _stop(self) -> None:
        super()._stop()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def cli_event(self, event: Event) -> None:
        if self._watched(event):
            return
        outs = self._feed(event)
        if outs or isinstance(event, MessageStart):
            self._commit()
        if outs:
            self._write(self.encoder.outs(outs))
        if self.answer.complete:
            self._finish()
            self._delivered(early=True)

    def cli_finished(self, result: Result) -> None:
        if self._answered:
            return
        self._commit()
        outs = self.answer.result(result)
        if outs:
            self._write(self.encoder.outs(outs))
        error = self.answer.error or (STREAM_DIVERGED if self.answer.diverged else None)
        if error is not None:
            self.cli_failed(error)
            return
        self._finish()
        self._delivered()

    def _finish(self) -> None:
        self._commit()
        self._stop()
        self.usage = self.answer.usage
        self._close(self.encoder.closing(self.answer))

    def cli_failed(self, error: APIError) -> None:
        if self._answered:
            return
        self.error = error
        self._stop()
        if not self.committed and not self.encoder.streams_failure(error):
            self.done.errback(error)
            return
        self._commit()
        self._close(self.encoder.failure(error))

    def _close(self, data: bytes) -> None:
        self._write(data)
        if self.run is not None:
            self.request.unregisterProducer()
        self.done.callback(None)
