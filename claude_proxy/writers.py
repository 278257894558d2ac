"""
The two ways a run's events become an HTTP response: an SSE stream of
`chat.completion.chunk`s, or one buffered `chat.completion`.

Both are RunConsumers; both expose `done`, a Deferred the route returns, which
fires when the response is written (or fails with the APIError to render) and
whose cancellation (the client went away) ends the CLI run.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.web.iweb import IRequest

from claude_proxy.answer import Answer
from claude_proxy.chat import chunk, completion, usage_chunk
from claude_proxy.errors import APIError
from claude_proxy.events import Event, MessageStart, Result, Usage

# Until the API has accepted the request, a failure can still be a real HTTP
# status (401 → 503, usage limit → 429 with Retry-After); headers wait for
# message_start, or at most this long, so clients' watchdogs see bytes.
HOLD_HEADERS_SECONDS = 10.0
# An SSE comment at least this often while the CLI is silent (long thinking).
HEARTBEAT_SECONDS = 15.0


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(obj: dict) -> bytes:
    return _ENCODER.encode(obj).encode("utf-8")


@define(eq=False)
class _Ending:
    """What every writer shares: the `done` Deferred, cancellable into the run."""

    done: Deferred = field(init=False)
    answer: Answer = field(factory=Answer, kw_only=True)
    # Called when the first content, reasoning or tool call is known (time to first token).
    on_output: Any = field(default=None, kw_only=True)
    run: Any = field(default=None, init=False)
    usage: Usage | None = field(default=None, init=False)
    error: APIError | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.done = Deferred(self._cancelled)

    def begin(self, run: Any) -> None:
        """The run is submitted: from now on a cancellation ends it."""
        self.run = run

    def _cancelled(self, _: Deferred) -> None:
        self._stop()
        if self.run is not None:
            self.run.cancel()

    def _stop(self) -> None:
        """Cancel any timers of the writer's own."""

    def _feed(self, event: Event) -> list[dict]:
        deltas = self.answer.feed(event)
        if deltas and self.on_output is not None:
            self.on_output()
            self.on_output = None
        return deltas

    def _answered_early(self) -> None:
        """The answer is whole before the CLI's result: end the CLI before it goes on."""
        if self.run is not None:
            self.run.cancel()


@define(eq=False)
class BufferedWriter(_Ending):
    """One chat.completion, sent when the answer is complete."""

    completion_id: str
    model: str
    created: int

    def cli_event(self, event: Event) -> None:
        self._feed(event)
        if self.answer.complete:
            self._respond()
            self._answered_early()

    def cli_finished(self, result: Result) -> None:
        self.answer.result(result)
        if self.answer.error is not None:
            self.cli_failed(self.answer.error)
            return
        self._respond()

    def _respond(self) -> None:
        answer = self.answer
        self.usage = answer.usage
        self.done.callback(completion(
            self.completion_id, self.model, self.created, answer.message(),
            answer.finish or "stop", answer.usage))

    def cli_failed(self, error: APIError) -> None:
        self.error = error
        self.done.errback(error)


@define(eq=False)
class StreamWriter(_Ending):
    """
    SSE chunks as the CLI's text deltas arrive, one stable id, then the finish
    chunk, the usage chunk when asked for, and `[DONE]`.
    """

    request: IRequest
    clock: Any  # IReactorTime
    completion_id: str
    model: str
    created: int
    include_usage: bool
    hold: float = HOLD_HEADERS_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    committed: bool = field(default=False, init=False)
    _frame: tuple[bytes, bytes] | None = field(default=None, init=False)
    _timer: IDelayedCall | None = field(default=None, init=False)
    _last_write: float = field(default=0.0, init=False)

    def begin(self, run: Any) -> None:
        super().begin(run)
        if self.done.called:  # the run failed before it could start
            return
        self._timer = self.clock.callLater(self.hold, self._commit)

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
        self._send(chunk(self.completion_id, self.model, self.created,
                         {"role": "assistant", "content": ""}))
        self._timer = self.clock.callLater(self.heartbeat, self._beat)

    def _write(self, data: bytes) -> None:
        self._last_write = self.clock.seconds()
        self.request.write(data)

    def _send(self, obj: dict) -> None:
        self._write(b"data: " + _dumps(obj) + b"\n\n")

    def _beat(self) -> None:
        quiet = self.clock.seconds() - self._last_write
        if quiet >= self.heartbeat:
            self._write(b": keep-alive\n\n")
            quiet = 0.0
        self._timer = self.clock.callLater(self.heartbeat - quiet, self._beat)

    def _stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _deltas(self, deltas: list[dict]) -> None:
        for delta in deltas:
            text = delta.get("content")
            if text is not None and len(delta) == 1:
                # The hot path, one event per token: the chunk around the text is
                # the same every time, so only the text is encoded.
                self._write(self._content_frame[0] + _ENCODER.encode(text).encode("utf-8")
                            + self._content_frame[1])
            else:
                self._send(chunk(self.completion_id, self.model, self.created, delta))

    @property
    def _content_frame(self) -> tuple[bytes, bytes]:
        if self._frame is None:
            marker = "\x00"
            whole = _dumps(chunk(self.completion_id, self.model, self.created, {"content": marker}))
            before, _, after = whole.partition(_ENCODER.encode(marker).encode("utf-8"))
            self._frame = (b"data: " + before, after + b"\n\n")
        return self._frame

    def cli_event(self, event: Event) -> None:
        deltas = self._feed(event)
        if deltas or isinstance(event, MessageStart):
            self._commit()
        self._deltas(deltas)
        if self.answer.complete:
            self._finish()
            self._answered_early()

    def cli_finished(self, result: Result) -> None:
        self._commit()
        self._deltas(self.answer.result(result))
        if self.answer.error is not None:
            self.cli_failed(self.answer.error)
            return
        self._finish()

    def _finish(self) -> None:
        self._commit()
        self._stop()
        self.usage = self.answer.usage
        self._send(chunk(self.completion_id, self.model, self.created, {},
                         self.answer.finish or "stop"))
        if self.include_usage:
            self._send(usage_chunk(self.completion_id, self.model, self.created, self.usage))
        self._close()

    def cli_failed(self, error: APIError) -> None:
        self.error = error
        self._stop()
        if not self.committed:
            self.done.errback(error)
            return
        self._send(error.to_json())
        self._close()

    def _close(self) -> None:
        self._write(b"data: [DONE]\n\n")
        if self.run is not None:
            self.request.unregisterProducer()
        self.done.callback(None)
