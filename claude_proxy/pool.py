"""
A warm pool: CLI processes started ahead of time for the request shapes that
recently arrived (model, system prompt, tools, options: everything fixed at
spawn), initialized and waiting on stdin: sessions without a conversation. A
request of that shape takes one (its conversation starts there) and a
replacement is started. Warming sends no API request: the CLI only calls the
API for a user turn, and a pre-started process has none until it is taken.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from claude_proxy.cli_lifetime import Tether
from claude_proxy.models import Aliases
from claude_proxy.plan import RunPlan
from claude_proxy.process import ProcessReactor
from claude_proxy.session import READY, CLISession

log = Logger()

# A shape nobody asked for in this long is forgotten: its processes are not recycled.
FORGET_AFTER = 3600.0
# A shape is warmed once it has come this often: a client whose every request differs
# (a dated system prompt) would otherwise have a process started and killed unused each time.
MIN_REPEATS = 2


@frozen
class PoolSnapshot:
    """The pool at one moment: what /health, /metrics and the status page read."""

    size: int
    waiting: int  # pre-started processes, ready or still starting
    ready: int  # initialized, waiting on stdin
    hits: int  # requests that took a pre-started process
    misses: int  # requests that found none of their shape


@define(eq=False)
class WarmPool:
    """
    Up to `size` pre-started sessions, for the most recently requested shapes.
    The runner counts them inside its concurrency limit and evicts one when a
    request needs the slot.
    """

    reactor: ProcessReactor
    size: int = 1
    ttl: float = 600.0
    scratch_root: str | None = None
    tether: Tether | None = None  # ties each CLI's life to the daemon's
    aliases: Aliases | None = None  # taught what the CLIs' initialize answers say
    _waiting: list[CLISession] = field(factory=list)  # oldest first
    _ttls: dict[CLISession, IDelayedCall] = field(factory=dict)
    # warm_key -> (plan, last seen, times); newest last
    _shapes: OrderedDict[str, tuple[RunPlan, float, int]] = field(factory=OrderedDict)
    _dying: set[CLISession] = field(factory=set)  # killed, not yet reaped
    _stopping: bool = False
    _hits: int = field(default=0, init=False)
    _misses: int = field(default=0, init=False)

    @property
    def count(self) -> int:
        return len(self._waiting)

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(self.size, self.count, sum(w.state == READY for w in self._waiting),
                            self._hits, self._misses)

    def has(self, plan: RunPlan) -> bool:
        return any(w.plan.warm_key == plan.warm_key for w in self._waiting)

    def take(self, plan: RunPlan) -> CLISession | None:
        """A live session for this plan's shape (a ready one first), out of the pool."""
        key = plan.warm_key
        matching = [w for w in self._waiting if w.plan.warm_key == key and w.alive]
        if not matching:
            self._misses += 1
            return None
        self._hits += 1
        chosen = next((w for w in matching if w.state == READY), matching[0])
        self._remove(chosen)
        return chosen

    def note(self, plan: RunPlan, room: int) -> None:
        """A request of this shape arrived; `room` processes may still be started."""
        if self.size <= 0:
            return
        key = plan.warm_key
        _, _, times = self._shapes.pop(key, (plan, 0.0, 0))
        self._shapes[key] = (plan, self.reactor.seconds(), times + 1)
        while len(self._shapes) > self.size:
            old, _ = self._shapes.popitem(last=False)
            for w in [w for w in self._waiting if w.plan.warm_key == old]:
                self._evict(w)
        self.refill(room)

    def refill(self, room: int) -> None:
        """Start processes for the wanted shapes, newest first, round robin, within `room`."""
        now = self.reactor.seconds()
        for key, (_, seen, _) in list(self._shapes.items()):
            if now - seen > FORGET_AFTER:
                del self._shapes[key]
        wanted = [plan for plan, _, times in reversed(self._shapes.values()) if times >= MIN_REPEATS]
        while wanted and not self._stopping and room > 0 and self.count < self.size:
            counts = {p.warm_key: sum(w.plan.warm_key == p.warm_key for w in self._waiting)
                      for p in wanted}
            plan = min(wanted, key=lambda p: counts[p.warm_key])  # ties: the newest shape
            if not self._start(plan):
                return
            room -= 1

    def evict_one(self) -> bool:
        """Free a slot for a request of another shape: the oldest process goes."""
        if not self._waiting:
            return False
        self._evict(self._waiting[0])
        return True

    def _remove(self, warm: CLISession) -> None:
        self._waiting.remove(warm)
        ttl = self._ttls.pop(warm, None)
        if ttl is not None and ttl.active():
            ttl.cancel()

    def _evict(self, warm: CLISession) -> None:
        self._remove(warm)
        self._dying.add(warm)
        warm.kill()  # it has done nothing worth a grace period

    def _start(self, plan: RunPlan) -> bool:
        warm = CLISession(self.reactor, plan, self.scratch_root, self.tether, aliases=self.aliases)
        try:
            warm.start()
        except Exception as e:  # a system prompt that cannot be written, too: no request fails
            log.warn("Could not pre-start a CLI process: {error}", error=repr(e))
            return False
        self._ttls[warm] = self.reactor.callLater(self.ttl, self._recycle, warm)
        self._waiting.append(warm)
        warm.exited.addCallback(self._ended, warm)
        return True

    def _recycle(self, warm: CLISession) -> None:
        # Idle too long: a fresh process replaces it (if its shape is still wanted).
        self._ttls.pop(warm, None)
        if warm in self._waiting:
            self._evict(warm)
            self.refill(1)

    def _ended(self, how: tuple[int | None, int | None, str], warm: CLISession) -> None:
        if warm in self._dying:
            self._dying.discard(warm)
            return
        if warm in self._waiting:
            # Died while waiting: never handed out; the next request of its shape starts another.
            self._remove(warm)
            exit_code, signal, stderr = how
            log.warn("A pre-started CLI process exited while waiting (exit {code}, signal {signal}): "
                     "{stderr}", code=exit_code, signal=signal, stderr=stderr[-300:])

    def stop(self) -> list[Deferred]:
        """Kill every waiting process; the Deferreds fire when they are reaped."""
        self._stopping = True
        for warm in list(self._waiting):
            self._evict(warm)
        return [warm.exited for warm in self._dying]
