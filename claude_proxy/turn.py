"""
One request's turn through the CLI, from admission to delivery, as one object
with an explicit state and one set of timers:

    queued ─▶ running ─▶ delivered ─▶ ended
                  └──────▶ ending ────┘

- queued: admitted, waiting for a slot (the total timer runs from here).
- running: a session (live, pre-started or new) runs the turn; its events go to
  the consumer (the writer), which gets exactly one ending.
- delivered: the writer has the whole answer. What is left of the CLI's turn
  decides the session: kept live for the conversation's next request (parked
  with what it now holds), or retired.
- ending: the consumer had its ending without an answer (a failure, a timeout,
  the client gone): the process is being ended.
- ended: the turn holds nothing (no slot, no timer, no process); `exited` fires.

The turn is the session's listener and the push producer of a streaming
response. It knows the runner only through its frozen TurnContext.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from claude_proxy.answer import Answer
from claude_proxy.continuation import Continuation
from claude_proxy.errors import (
    APIError, classify_cli_error, classify_exit, cli_unavailable, timeout_error,
)
from claude_proxy.events import ApiRetry, Event, MessageStart, RateLimit, Result, ToolPermission
from claude_proxy.plan import RunPlan
from claude_proxy.process import ProcessReactor
from claude_proxy.session import IDLE, TOOLS, TURN, CLISession

log = Logger()

QUEUED, RUNNING, DELIVERED, ENDING, ENDED = "queued", "running", "delivered", "ending", "ended"

# When an answer is whole before the CLI's turn ends (a tool call, the token limit, a
# stop) and its session is not kept, the CLI reports the account's quota a few ms later
# (CLI 2.1.330: after message_stop); it is ended once it has, or after this long.
QUOTA_GRACE_SECONDS = 0.5

# A bug of the proxy's own, met inside one turn: that turn fails, the daemon goes on.
INTERNAL_ERROR = APIError(500, "Internal error in the proxy while running the CLI; see its log.",
                          "server_error", "internal_error")
NOT_UNICODE = APIError(400, "The system prompt is not valid Unicode (it holds a lone surrogate).",
                       "invalid_request_error", "invalid_text", "messages")
OUTPUT_TOO_LONG = APIError(502, "The Claude Code CLI wrote a runaway output line.",
                           "server_error", "cli_error")


def start_error(failure: BaseException, path: str) -> APIError:
    """The error a turn fails with when starting it raised."""
    if isinstance(failure, APIError):
        return failure
    if isinstance(failure, UnicodeError):
        return NOT_UNICODE
    if isinstance(failure, OSError):
        return cli_unavailable(path, str(failure))
    return INTERNAL_ERROR


class RunConsumer(Protocol):
    """What a turn reports to: events as they come, then exactly one ending."""

    def cli_event(self, event: Event) -> None: ...

    def cli_finished(self, result: Result) -> None: ...

    def cli_failed(self, error: APIError) -> None: ...


@frozen
class TurnContext:
    """What the runner gives every turn: its clock, its limits, and where sessions come from and go."""

    reactor: ProcessReactor
    timeout: float
    idle_timeout: float
    kill_grace: float
    # A pre-started session of the plan's shape, or a new one not yet spawned.
    open: Callable[[RunPlan], CLISession]
    # Keep a session for its conversation's next request: (session, shape, conversation).
    park: Callable[[CLISession, tuple[tuple[str, str], ...], str], None]


@define(eq=False)
class Turn:
    context: TurnContext
    plan: RunPlan
    consumer: RunConsumer | None
    # What continues this conversation in a live session, and what the session then holds;
    # None: the session is never kept.
    continuation: Continuation | None = None
    # The account's quota reports, also those that come after the answer.
    on_quota: Callable[[RateLimit], None] | None = None
    # Whether a CLI ended after an early answer gets QUOTA_GRACE_SECONDS to report the quota.
    await_quota: bool = False
    state: str = field(default=QUEUED, init=False)
    session: CLISession | None = field(default=None, init=False)
    exited: Deferred = field(factory=Deferred, init=False)  # fires (with the turn) once ended
    # The one set of timers: "total", "idle", and one ending ("kill" or "quota").
    _timers: dict[str, IDelayedCall] = field(factory=dict, init=False)
    _paused: bool = field(default=False, init=False)
    # What the CLI said of the account: a quota report came; when a refused one resets;
    # how long the CLI's last 429 retry waited.
    _quota_seen: bool = field(default=False, init=False)
    _resets_at: int | None = field(default=None, init=False)
    _retry_after: int | None = field(default=None, init=False)
    # Once delivered: the conversation the session holds, and the session states it is kept in.
    _conversation: str | None = field(default=None, init=False)
    _park_in: tuple[str, ...] = field(default=(), init=False)

    def __attrs_post_init__(self) -> None:
        self._arm("total", self.context.timeout, self._timed_out, "total")

    # -- running

    def start(self, live: CLISession | None = None) -> None:
        """
        Run the turn in `live`, a session that holds the conversation, or in a
        pre-started or new one. Whatever fails on the way fails this turn
        alone, and gives back its slot and scratch directory.
        """
        self.state = RUNNING
        try:
            self._start(live)
        except Exception as e:
            if not isinstance(e, (OSError, UnicodeError, APIError)):
                log.failure("Starting a CLI run failed")
            self._report_error(start_error(e, self.plan.base_args[0]))
            if self.session is not None and self.session.pid is not None:
                self.terminate()  # its exit cleans up
            else:
                self._end()

    def _start(self, live: CLISession | None) -> None:
        # Without tools and when the session is not kept, stdin closes once all is
        # written: the CLI has nothing to ask and exits after its answer.
        close = not self.plan.tools and self.continuation is None
        if live is not None:
            # A live session holding the conversation: only the new part goes.
            assert self.continuation is not None
            self.session = live
            live.attach(self)
            if live.state == TOOLS and self.continuation.results is not None:
                live.give_results(self.continuation.results)
            else:
                live.send([self.continuation.line], self.plan.settings)
        else:
            self.session = session = self.context.open(self.plan)
            session.attach(self)
            if session.pid is None:
                session.start(self.plan.stdin, close_after=close,
                              settings=self.plan.cold_settings)
            else:
                session.send(self.plan.stdin, self.plan.cold_settings, close_after=close)
        self.session.on_quota = self.on_quota
        if self._paused:
            self.session.pause()
        else:
            self._arm_idle()

    # -- what the session tells us

    def session_output(self) -> None:
        self._arm_idle()

    def session_event(self, event: Event) -> None:
        try:
            self._event(event)
        except Exception:
            self._crashed("handling a line of the CLI's output")

    def _event(self, event: Event) -> None:
        if isinstance(event, RateLimit):
            self._quota_seen = True
            if event.status == "rejected":
                self._resets_at = event.resets_at
        if self.state == DELIVERED:
            self._after_delivery(event)
            return
        if self.state != RUNNING:
            return
        if isinstance(event, Result):
            self._result(event)
            return
        if isinstance(event, MessageStart) and self.plan.model.startswith("claude-") \
                and event.model and event.model != self.plan.model:
            # The CLI maps some full ids to newer models without saying so.
            log.warn("The CLI ran {actual} for the requested {requested}",
                     actual=event.model, requested=self.plan.model)
        if isinstance(event, ApiRetry):
            log.info("CLI retrying the API call (attempt {attempt}, status {status})",
                     attempt=event.attempt, status=event.error_status)
            # The CLI waits as long as the API's retry-after says (plus jitter): the
            # delay of its last retry of a 429 is the best wait a client can be told.
            delay = event.retry_delay_ms
            if event.error_status == 429 and delay is not None and delay > 0:
                self._retry_after = -(-delay // 1000)
        self._report(lambda c: c.cli_event(event))

    def _result(self, event: Result) -> None:
        if event.is_error:
            self._report_error(classify_cli_error(
                event.text, event.api_error_status, self.context.reactor.seconds(),
                self._resets_at, self._retry_after, event.api_error_type))
        else:
            # The writer reports delivery (delivered()) as it takes the ending.
            self._ending(lambda c: c.cli_finished(event))
        if self.state != DELIVERED:
            self._retire()

    def session_broken(self) -> None:
        self._report_error(OUTPUT_TOO_LONG)
        self.terminate()

    def session_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        try:
            if self.state == RUNNING:
                self._report_error(classify_exit(exit_code, signal, stderr,
                                                 self.context.reactor.seconds()))
        except Exception:
            self._crashed("classifying the CLI's exit")
        finally:
            self._end()

    def _crashed(self, doing: str) -> None:
        """A bug of the proxy's met in this turn: fail it alone and end its process."""
        log.failure("Internal error while {doing}", doing=doing)
        self._report_error(INTERNAL_ERROR)
        self.terminate()

    # -- the answer is delivered: keep the session, or end it

    def delivered(self, answer: Answer | None) -> None:
        """
        The writer has delivered the answer (None: one the client may not
        continue, such as a failed one). What the session holds decides
        whether it is kept; the rest of the CLI's turn is not the answer's.
        """
        if self.state not in (RUNNING, ENDING):
            return
        self.state = DELIVERED
        self.consumer = None
        if answer is not None and self.continuation is not None:
            self._conversation = self.continuation.after(answer)
        # Whole before the CLI's turn ended: kept only if the CLI stops for tool results
        # (its conversation would otherwise go on past what the client got).
        early = self.session is not None and self.session.state == TURN
        self._park_in = (TOOLS,) if early else (TOOLS, IDLE)
        self._settle()

    def _after_delivery(self, event: Event) -> None:
        if isinstance(event, RateLimit) and "quota" in self._timers:
            self.terminate()  # the quota is reported: nothing more to wait for
        elif isinstance(event, (ToolPermission, Result)):
            self._settle()

    def _settle(self) -> None:
        session = self.session
        if session is None or not session.alive:
            return
        if self._conversation is not None and session.state in self._park_in:
            assert self.continuation is not None
            session.detach()
            self.session = None
            self.context.park(session, self.continuation.shape, self._conversation)
            self._end()
        elif session.state == IDLE:
            self._retire()
        elif self._conversation is None and not self._timers.keys() & {"kill", "quota"}:
            # Ended early (a tool call, the token limit, a stop): the CLI would go on.
            if self.await_quota and not self._quota_seen:
                self._cancel_timers()
                self._arm("quota", QUOTA_GRACE_SECONDS, self.terminate)
            else:
                self.terminate()

    def _retire(self) -> None:
        """The CLI's turn is over and the session not kept: it exits once stdin closes."""
        if self.session is None or "kill" in self._timers:
            return
        self.session.close_stdin()
        self._cancel_timers()
        self._arm("kill", self.context.kill_grace, self.terminate)

    # -- ending

    def cancel(self) -> None:
        """The client went away: end the process (or leave the queue) quietly."""
        if self.state == ENDED:
            return
        self.consumer = None
        if self.state != DELIVERED:
            self.state = ENDING
        if self.session is None:
            self._end()
        else:
            self.terminate()

    def fail(self, error: APIError) -> None:
        self._report_error(error)
        self.cancel()

    def terminate(self) -> None:
        """SIGTERM now, SIGKILL after the grace period if it is still there."""
        self._cancel_timers()
        if self.session is not None:
            self.session.end(self.context.kill_grace)

    def _timed_out(self, kind: str) -> None:
        self.fail(timeout_error(kind, self.context.timeout if kind == "total"
                                else self.context.idle_timeout))

    def _arm(self, name: str, seconds: float, f: Callable[..., object], *args: object) -> None:
        self._timers[name] = self.context.reactor.callLater(seconds, self._fire, name, f, *args)

    def _fire(self, name: str, f: Callable[..., object], *args: object) -> None:
        self._timers.pop(name, None)
        f(*args)

    def _arm_idle(self) -> None:
        if self.state != RUNNING or self.session is None or not self.session.alive:
            return
        idle = self._timers.get("idle")
        if idle is not None:
            idle.reset(self.context.idle_timeout)
        else:
            self._arm("idle", self.context.idle_timeout, self._timed_out, "idle")

    def _cancel_timers(self) -> None:
        timers, self._timers = self._timers, {}
        for call in timers.values():
            if call.active():
                call.cancel()

    def _report(self, deliver: Callable[[RunConsumer], None]) -> None:
        if self.state not in (QUEUED, RUNNING) or self.consumer is None:
            return
        try:
            deliver(self.consumer)
        except Exception:
            self._crashed("handing a CLI event to the response")

    def _ending(self, deliver: Callable[[RunConsumer], None]) -> None:
        """Deliver the one ending; nothing reaches the consumer after it."""
        if self.state not in (QUEUED, RUNNING):
            return
        self.state = ENDING
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        try:
            deliver(consumer)
        except Exception:
            # The response could not take its ending: there is no one left to tell.
            log.failure("Internal error while ending a response")
            self.state = ENDING
            self.terminate()

    def _report_error(self, error: APIError) -> None:
        self._ending(lambda c: c.cli_failed(error))

    def _end(self) -> None:
        """The turn holds nothing any more: its session has exited or lives on."""
        self._cancel_timers()
        if self.state == ENDED:
            return
        self.state = ENDED
        self.exited.callback(self)

    # -- IPushProducer, for the streaming response

    def pauseProducing(self) -> None:
        self._paused = True
        if self.session is not None:
            self.session.pause()
        # A client that reads slowly is not a silent CLI.
        idle = self._timers.pop("idle", None)
        if idle is not None and idle.active():
            idle.cancel()

    def resumeProducing(self) -> None:
        self._paused = False
        if self.session is not None:
            self.session.resume()
            self._arm_idle()

    def stopProducing(self) -> None:
        self.cancel()
