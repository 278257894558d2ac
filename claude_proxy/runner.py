"""
Admission and capacity: a concurrency limit over every CLI process the daemon
holds (turns running, pre-started sessions, live sessions: counted here and
nowhere else), a bounded queue, and the turns themselves (turn.py), each
handed a frozen TurnContext. A request that needs a slot ends a waiting
process rather than wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import deferLater
from twisted.logger import Logger

from claude_proxy.cli_lifetime import Tether
from claude_proxy.continuation import Continuation
from claude_proxy.errors import APIError, queue_full
from claude_proxy.events import RateLimit
from claude_proxy.live_sessions import LiveSessions, SessionsSnapshot
from claude_proxy.models import Aliases
from claude_proxy.plan import RunPlan
from claude_proxy.pool import PoolSnapshot, WarmPool
from claude_proxy.process import ProcessReactor
from claude_proxy.session import CLISession
from claude_proxy.turn import RunConsumer, Turn, TurnContext

log = Logger()

# What responses get, after their runs, to reach their sockets before shutdown.
DRAIN_SECONDS = 0.1
SHUTTING_DOWN = APIError(503, "The proxy is shutting down.", "server_error", "shutting_down")


@frozen
class RunnerSnapshot:
    """
    The daemon's CLI processes at one moment, with what its pool and sessions
    have counted: what /health, /metrics and the status page read.
    """

    running: int  # turns holding a slot
    queued: int
    max_concurrent: int
    warm: PoolSnapshot | None  # None: no warm pool (--warm 0)
    sessions: SessionsSnapshot | None  # None: no live sessions (--sessions 0)


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
    _active: set[Turn] = field(factory=set)
    _queue: deque[Turn] = field(factory=deque)
    _stopping: bool = False

    def startService(self) -> None:
        super().startService()
        if self.tether is not None:
            self.tether.sweep()

    def submit(self, plan: RunPlan, consumer: RunConsumer,
               continuation: Continuation | None = None,
               on_quota: Callable[[RateLimit], None] | None = None,
               await_quota: bool = False) -> Turn:
        """
        Continue a live session, start a turn now, or queue it; a full queue
        raises a 429 at once.
        """
        if self._stopping:
            raise SHUTTING_DOWN
        if not (self.sessions is not None and self.sessions.size > 0 and plan.continuable):
            continuation = None  # its session is never kept
        live = self._take_live(continuation)
        if live is None and len(self._active) >= self.max_concurrent \
                and len(self._queue) >= self.queue_size:
            raise queue_full(retry_after=5)
        turn = Turn(self._context(), plan, consumer, continuation, on_quota, await_quota)
        turn.exited.addCallback(self._release)
        if live is not None:
            # Its process already counts inside the limit: nothing to wait for.
            self._active.add(turn)
            turn.start(live)
            return turn
        if len(self._active) < self.max_concurrent:
            self._launch(turn)
        else:
            self._queue.append(turn)
        self._warm(lambda pool: pool.note(plan, self._room()))
        return turn

    def _context(self) -> TurnContext:
        return TurnContext(self.reactor, self.timeout, self.idle_timeout, self.kill_grace,
                           self._open, self.park)

    def _take_live(self, continuation: Continuation | None) -> CLISession | None:
        if continuation is None or self.sessions is None:
            return None
        try:
            return self.sessions.take(continuation)
        except Exception:
            log.failure("Internal error in the live sessions")
            return None

    def _open(self, plan: RunPlan) -> CLISession:
        """A pre-started session of the plan's shape, or a new one (not yet spawned)."""
        warm = self.pool.take(plan) if self.pool is not None else None
        return warm if warm is not None else CLISession(
            self.reactor, plan, self.scratch_root, self.tether, aliases=self.aliases)

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

    def _launch(self, turn: Turn) -> None:
        # A turn that takes a pre-started process of its shape frees that slot itself;
        # otherwise waiting processes give way: pre-started ones (they have done
        # nothing) first, then the least recently used live session.
        def full() -> bool:
            return len(self._active) + self._held() >= self.max_concurrent

        pool, sessions = self.pool, self.sessions
        if pool is None or not pool.has(turn.plan):
            while full() and pool is not None and pool.evict_one():
                pass
            while full() and sessions is not None and sessions.evict_one():
                pass
        self._active.add(turn)
        turn.start()  # it fails alone, never raises

    def _room(self) -> int:
        return max(0, self.max_concurrent - len(self._active) - len(self._queue) - self._held())

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def snapshot(self) -> RunnerSnapshot:
        return RunnerSnapshot(self.in_flight, self.waiting, self.max_concurrent,
                              self.pool.snapshot() if self.pool is not None else None,
                              self.sessions.snapshot() if self.sessions is not None else None)

    def _release(self, turn: Turn) -> None:
        """A turn has ended: out of the queue or its slot, and the next one goes."""
        if turn in self._queue:
            self._queue.remove(turn)
        self._active.discard(turn)
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
        for turn in list(self._queue):
            turn.fail(SHUTTING_DOWN)
        running = list(self._active)
        waiting = (self.pool.stop() if self.pool is not None else []) + \
            (self.sessions.stop() if self.sessions is not None else [])
        done = DeferredList([turn.exited for turn in running] + waiting)
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
        for turn in list(self._active):
            turn.fail(SHUTTING_DOWN)
