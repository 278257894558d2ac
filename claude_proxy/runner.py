"""
Running a request's turn: admission (a concurrency limit and a bounded queue),
a CLI session to run it in (a live one that holds its conversation, a
pre-started one, or a new one), the idle and total timers, and what becomes of
the session once the answer is given: kept live for the conversation's next
request, or ended. Every timer is cancelled on every way out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from claude_proxy.errors import (
    APIError, classify_cli_error, classify_exit, cli_unavailable, queue_full, timeout_error,
)
from claude_proxy.events import ApiRetry, Event, MessageStart, RateLimit, Result, ToolPermission
from claude_proxy.live import Continuation
from claude_proxy.live_sessions import LiveSessions
from claude_proxy.models import Aliases
from claude_proxy.plan import RunPlan
from claude_proxy.pool import WarmPool
from claude_proxy.session import IDLE, TOOLS, TURN, CLISession, ProcessReactor
from claude_proxy.tether import Tether

log = Logger()

# When an answer is whole before the CLI's turn ends (a tool call, the token limit, a
# stop) and its session is not kept, the CLI reports the account's quota a few ms later
# (CLI 2.1.330: after message_stop); it is ended once it has, or after this long.
QUOTA_GRACE_SECONDS = 0.5

# What responses get, after their runs, to reach their sockets before shutdown.
DRAIN_SECONDS = 0.1
SHUTTING_DOWN = APIError(503, "The proxy is shutting down.", "server_error", "shutting_down")
# A bug of the proxy's own, met inside one run: that run fails, the daemon goes on.
INTERNAL_ERROR = APIError(500, "Internal error in the proxy while running the CLI; see its log.",
                          "server_error", "internal_error")
NOT_UNICODE = APIError(400, "The system prompt is not valid Unicode (it holds a lone surrogate).",
                       "invalid_request_error", "invalid_text", "messages")
OUTPUT_TOO_LONG = APIError(502, "The Claude Code CLI wrote a runaway output line.",
                           "server_error", "cli_error")


def run_error(failure: BaseException, path: str) -> APIError:
    """The error a run fails with when starting it raised."""
    if isinstance(failure, APIError):
        return failure
    if isinstance(failure, UnicodeError):
        return NOT_UNICODE
    if isinstance(failure, OSError):
        return cli_unavailable(path, str(failure))
    return INTERNAL_ERROR


class RunConsumer(Protocol):
    """What a run reports to: events as they come, then exactly one ending."""

    def cli_event(self, event: Event) -> None: ...

    def cli_finished(self, result: Result) -> None: ...

    def cli_failed(self, error: APIError) -> None: ...


@define(eq=False)
class CLIRun:
    """
    One request's turn, from queued to answered. It is the listener of the
    session it runs in, and the push producer of a streaming response: a
    slow client stops us reading the CLI.
    """

    runner: Runner
    plan: RunPlan
    consumer: RunConsumer | None
    # The conversation's keys and what a live session would be sent; None: never kept.
    turn: Continuation | None = None
    # The account's quota reports, also those that come after the answer.
    on_quota: Callable[[RateLimit], None] | None = None
    # Whether a CLI that is ended after an early answer gets QUOTA_GRACE_SECONDS to report it.
    await_quota: bool = False
    session: CLISession | None = None
    continued: bool = False  # the session is a live one that holds the conversation
    exited: Deferred = field(factory=Deferred)  # fires when the run no longer holds a slot
    _total: IDelayedCall | None = None
    _idle: IDelayedCall | None = None
    _kill: IDelayedCall | None = None
    _grace: IDelayedCall | None = None
    _paused: bool = False
    _resets_at: int | None = None
    _retry_after: int | None = None
    _quota_seen: bool = False
    _done: bool = False  # the consumer has had its ending
    _answered: bool = False  # the answer is delivered: the rest of the turn is not its
    _keep: str | None = None  # the conversation the session holds, if it may be kept
    _early: bool = False  # the answer was whole before the turn's result
    _over: bool = False

    def _later(self, seconds: float, f: Callable[..., object], *args: object) -> IDelayedCall:
        return self.runner.reactor.callLater(seconds, f, *args)

    @property
    def keepable(self) -> bool:
        """Whether the session may live on after this turn."""
        return self.runner.sessions is not None and self.runner.sessions.size > 0 \
            and self.turn is not None and self.plan.continuable

    def queued(self) -> None:
        self._total = self._later(self.runner.timeout, self._timed_out, "total")

    def start(self) -> None:
        """
        Run the turn in a live session, a pre-started one or a new one.
        Whatever fails on the way fails this run alone: its slot and scratch
        directory are given back.
        """
        try:
            self._start()
        except Exception as e:
            if not isinstance(e, (OSError, UnicodeError, APIError)):
                log.failure("Starting a CLI run failed")
            self._report_error(run_error(e, self.plan.base_args[0]))
            if self.session is not None and self.session.pid is not None:
                self.terminate()  # its exit cleans up
            else:
                self._release()

    def _start(self) -> None:
        # Without tools and when the session is not kept, stdin closes once all is
        # written: the CLI has nothing to ask and exits after its answer.
        close = not self.plan.tools and not self.keepable
        if self.session is not None:
            # A live session holding the conversation: only the new part goes.
            self.session.attach(self)
            assert self.turn is not None
            if self.session.state == TOOLS and self.turn.results is not None:
                self.session.give_results(self.turn.results)
            else:
                self.session.send([self.turn.line], self.plan.settings)
        else:
            warm = self.runner.pool.take(self.plan) if self.runner.pool is not None else None
            if warm is not None:
                self.session = warm
                warm.attach(self)
                warm.send(self.plan.stdin, self.plan.cold_settings, close_after=close)
            else:
                self.session = CLISession(self.runner.reactor, self.plan, self.runner.scratch_root,
                                          self.runner.tether, aliases=self.runner.aliases)
                self.session.attach(self)
                self.session.start(self.plan.stdin, close_after=close,
                                   settings=self.plan.cold_settings)
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
        if self._answered:
            self._after_answer(event)
            return
        if self._done:
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
                event.text, event.api_error_status, self.runner.reactor.seconds(),
                self._resets_at, self._retry_after))
        else:
            # The consumer says whether the session may be kept (finish()).
            self._end(lambda c: c.cli_finished(event))
        if not self._answered:
            self._retire()

    def session_broken(self) -> None:
        self._report_error(OUTPUT_TOO_LONG)
        self.terminate()

    def session_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        try:
            if not self._done:
                self._report_error(classify_exit(exit_code, signal, stderr,
                                                 self.runner.reactor.seconds()))
        except Exception:
            self._crashed("classifying the CLI's exit")
        finally:
            self._release()

    def _crashed(self, doing: str) -> None:
        """A bug of the proxy's met in this run: fail it alone and end its process."""
        log.failure("Internal error while {doing}", doing=doing)
        self._report_error(INTERNAL_ERROR)
        self.terminate()

    # -- the answer is delivered: keep the session, or end it

    def finish(self, keep: str | None) -> None:
        """
        The answer is delivered. `keep`: the conversation the session now holds
        when the client may continue it (else None); the rest of the turn is
        not the answer's.
        """
        if self._answered or self._over:
            return
        self._answered = True
        self._done = True
        self.consumer = None
        self._keep = keep if self.keepable else None
        self._early = self.session is not None and self.session.state == TURN
        self._settle()

    def _after_answer(self, event: Event) -> None:
        if isinstance(event, RateLimit) and self._grace is not None:
            self.terminate()  # the quota is reported: nothing more to wait for
        elif isinstance(event, (ToolPermission, Result)):
            self._settle()

    def _settle(self) -> None:
        session = self.session
        if session is None or not session.alive:
            return
        if self._keep is not None and (session.state == TOOLS or (
                session.state == IDLE and not self._early)):
            self._park(session, self._keep)
        elif session.state == IDLE:
            self._retire()
        elif self._keep is None and self._grace is None and self._kill is None:
            # Ended early (a tool call, the token limit, a stop): the CLI would go on.
            if self.await_quota and not self._quota_seen:
                self._cancel_timers()
                self._grace = self._later(QUOTA_GRACE_SECONDS, self.terminate)
            else:
                self.terminate()

    def _park(self, session: CLISession, conversation: str) -> None:
        assert self.turn is not None
        session.detach()
        self.runner.park(session, self.turn.shape, conversation)
        self.session = None
        self._release()

    def _retire(self) -> None:
        """The turn is over and the session not kept: it exits once stdin closes."""
        if self.session is None or self._kill is not None:
            return
        self.session.close_stdin()
        self._cancel_timers()
        self._kill = self._later(self.runner.kill_grace, self.terminate)

    # -- ending

    def cancel(self) -> None:
        """The client went away: end the process (or leave the queue) quietly."""
        self._done = True
        self.consumer = None
        if self.session is None:
            self.runner._dequeue(self)
            self._release()
        else:
            self.terminate()

    def fail(self, error: APIError) -> None:
        self._report_error(error)
        self.cancel()

    def terminate(self) -> None:
        """SIGTERM now, SIGKILL after the grace period if it is still there."""
        self._cancel_timers()
        if self.session is not None:
            self.session.end(self.runner.kill_grace)

    def _timed_out(self, kind: str) -> None:
        seconds = self.runner.timeout if kind == "total" else self.runner.idle_timeout
        if kind == "total":
            self._total = None
        else:
            self._idle = None
        self.fail(timeout_error(kind, seconds))

    def _arm_idle(self) -> None:
        if self._done or self.session is None or not self.session.alive:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.runner.idle_timeout)
        else:
            self._idle = self._later(self.runner.idle_timeout, self._timed_out, "idle")

    def _cancel_timers(self) -> None:
        for call in (self._total, self._idle, self._kill, self._grace):
            if call is not None and call.active():
                call.cancel()
        self._total = self._idle = self._kill = self._grace = None

    def _report(self, deliver: Callable[[RunConsumer], None]) -> None:
        if self._done or self.consumer is None:
            return
        try:
            deliver(self.consumer)
        except Exception:
            self._crashed("handing a CLI event to the response")

    def _end(self, deliver: Callable[[RunConsumer], None]) -> None:
        """Deliver the one ending; nothing reaches the consumer after it."""
        if self._done:
            return
        self._done = True
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        try:
            deliver(consumer)
        except Exception:
            # The response could not take its ending: there is no one left to tell.
            log.failure("Internal error while ending a response")
            self._answered = True
            self.terminate()

    def _report_error(self, error: APIError) -> None:
        self._end(lambda c: c.cli_failed(error))

    def _release(self) -> None:
        """The run holds no slot any more: its session has exited or lives on."""
        self._cancel_timers()
        if self._over:
            return
        self._over = True
        try:
            self.runner._release(self)
        finally:
            self.exited.callback(None)

    # -- IPushProducer, for the streaming response

    def pauseProducing(self) -> None:
        self._paused = True
        if self.session is not None:
            self.session.pause()
        # A client that reads slowly is not a silent CLI.
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
            self._idle = None

    def resumeProducing(self) -> None:
        self._paused = False
        if self.session is not None:
            self.session.resume()
            self._arm_idle()

    def stopProducing(self) -> None:
        self.cancel()


@define(eq=False, slots=False)
class Runner(Service):
    """
    Admits runs up to max_concurrent at once, queues up to queue_size more,
    and ends every process it started when the service stops. Pre-started and
    live sessions count inside the limit; a run that needs a slot ends one.
    """

    reactor: ProcessReactor
    max_concurrent: int = 4
    queue_size: int = 32
    timeout: float = 600.0
    idle_timeout: float = 180.0
    kill_grace: float = 5.0
    scratch_root: str | None = None
    shutdown_grace: float = 0.0
    pool: WarmPool | None = None  # pre-started sessions
    sessions: LiveSessions | None = None  # sessions kept with their conversation
    tether: Tether | None = None  # ties each CLI's life to the daemon's
    aliases: Aliases = field(factory=Aliases)  # what the CLI's aliases resolve to
    _active: set[CLIRun] = field(factory=set)
    _queue: deque[CLIRun] = field(factory=deque)
    _stopping: bool = False

    def startService(self) -> None:
        super().startService()
        if self.tether is not None:
            self.tether.sweep()

    def submit(self, plan: RunPlan, consumer: RunConsumer, turn: Continuation | None = None,
               on_quota: Callable[[RateLimit], None] | None = None,
               await_quota: bool = False) -> CLIRun:
        """
        Continue a live session, start a run now, or queue it; a full queue
        raises a 429 at once.
        """
        if self._stopping:
            raise SHUTTING_DOWN
        run = CLIRun(self, plan, consumer, turn, on_quota, await_quota)
        live = self._take_live(run)
        if live is not None:
            # Its process already counts inside the limit: nothing to wait for.
            run.session, run.continued = live, True
            run.queued()
            self._active.add(run)
            run.start()
            return run
        if len(self._active) >= self.max_concurrent and len(self._queue) >= self.queue_size:
            raise queue_full(retry_after=5)
        run.queued()
        if len(self._active) < self.max_concurrent:
            self._launch(run)
        else:
            self._queue.append(run)
        self._warm(lambda pool: pool.note(plan, self._room()))
        return run

    def _take_live(self, run: CLIRun) -> CLISession | None:
        if not run.keepable or run.turn is None or self.sessions is None:
            return None
        try:
            return self.sessions.take(run.turn)
        except Exception:
            log.failure("Internal error in the live sessions")
            return None

    def park(self, session: CLISession, shape: tuple[tuple[str, str], ...],
             conversation: str) -> None:
        """
        Keep a session for its conversation's next request. Live sessions leave the warm
        pool its slots, so it is refilled however many conversations are live (a request
        that needs a slot ends a live session rather than wait).
        """
        assert self.sessions is not None
        self.sessions.park(session, shape, conversation)
        keep = max(0, self.max_concurrent - (self.pool.size if self.pool is not None else 0))
        while self.sessions.count > keep and self.sessions.evict_one():
            pass

    def _warm(self, step: Callable[[WarmPool], None]) -> None:
        """A step of the warm pool's; a failure there costs a pre-started process, no request."""
        if self.pool is None:
            return
        try:
            step(self.pool)
        except Exception:
            log.failure("Internal error in the warm pool")

    def _held(self) -> int:
        """Processes that wait without a request: pre-started and live sessions."""
        return (self.pool.count if self.pool is not None else 0) + \
            (self.sessions.count if self.sessions is not None else 0)

    def _launch(self, run: CLIRun) -> None:
        # A run that takes a pre-started process of its shape frees that slot itself;
        # otherwise waiting processes give way: pre-started ones (they have done
        # nothing) first, then the least recently used live session.
        def full() -> bool:
            return len(self._active) + self._held() >= self.max_concurrent

        pool, sessions = self.pool, self.sessions
        if pool is None or not pool.has(run.plan):
            while full() and pool is not None and pool.evict_one():
                pass
            while full() and sessions is not None and sessions.evict_one():
                pass
        self._active.add(run)
        run.start()  # it fails alone, never raises

    def _room(self) -> int:
        return max(0, self.max_concurrent - len(self._active) - len(self._queue) - self._held())

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _dequeue(self, run: CLIRun) -> None:
        if run in self._queue:
            self._queue.remove(run)

    def _release(self, run: CLIRun) -> None:
        self._active.discard(run)
        while self._queue and len(self._active) < self.max_concurrent:
            self._launch(self._queue.popleft())
        if not self._stopping:
            self._warm(lambda pool: pool.refill(self._room()))

    def stopService(self) -> Deferred:
        """
        Queued requests fail at once; running ones get shutdown_grace seconds
        to finish, then fail too (a stream gets an error event and [DONE]),
        and every CLI process is ended, live and pre-started ones at once.
        """
        self._stopping = True
        super().stopService()
        for run in list(self._queue):
            run.fail(SHUTTING_DOWN)
        running = list(self._active)
        waiting = (self.pool.stop() if self.pool is not None else []) + \
            (self.sessions.stop() if self.sessions is not None else [])
        done = DeferredList([run.exited for run in running] + waiting)
        if running and self.shutdown_grace <= 0:
            self._end_all()
        elif running:
            log.info("Waiting up to {grace}s for {count} request(s) to finish",
                     grace=self.shutdown_grace, count=len(running))
            deadline = self.reactor.callLater(self.shutdown_grace, self._end_all)
            done.addBoth(lambda result: deadline.cancel() if deadline.active() else None)
        # A response is written in the same turn its run lets go of its slot (a kept
        # session does at once): let the reactor flush it before shutdown drops connections.
        return done.addCallback(lambda _: deferLater(self.reactor, DRAIN_SECONDS, lambda: None))

    def _end_all(self) -> None:
        for run in list(self._active):
            run.fail(SHUTTING_DOWN)
