"""
A warm pool: CLI processes started ahead of time for the request shapes that
recently arrived (model, system prompt, tools, options: everything fixed at
spawn), initialized and waiting on stdin. A request of that shape takes one —
each process serves exactly one request, so no history is shared — and a
replacement is started. Warming sends no API request: the CLI only calls the
API for a user turn, and a pre-started process has none until it is taken.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from typing import Any

from attrs import Factory, define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from claude_proxy.events import ControlRequest, parse_line
from claude_proxy.plan import RunPlan
from claude_proxy.runner import control_answer, spawn
from claude_proxy.tether import Tether, send_signal
from claude_proxy.tools import INITIALIZE_ID, initialize_request

log = Logger()

# A shape nobody asked for in this long is forgotten: its processes are not recycled.
FORGET_AFTER = 3600.0
# A shape is warmed once it has come this often: a client whose every request differs
# (a dated system prompt) would otherwise have a process started and killed unused each time.
MIN_REPEATS = 2
BARE_INITIALIZE = json.dumps(initialize_request(()), separators=(",", ":")).encode() + b"\n"


@define(eq=False)
class WarmProcess:
    """One pre-started CLI process; the controller of its protocol until it is taken."""

    pool: WarmPool
    plan: RunPlan
    transport: Any = None
    protocol: Any = None
    workdir: str | None = None
    ready: bool = False  # it has answered the initialize request
    ended: bool = False
    exited: Deferred = Factory(Deferred)
    _ttl: IDelayedCall | None = None

    # -- the process protocol's controller, while it waits

    def output_seen(self) -> None:
        pass

    def line_received(self, line: bytes) -> None:
        if b'"control_' not in line:
            return
        try:
            obj = json.loads(line)
        except ValueError:
            return
        if obj.get("type") == "control_response" and \
                obj.get("response", {}).get("request_id") == INITIALIZE_ID:
            self.ready = True
            return
        event = parse_line(line)
        if isinstance(event, ControlRequest):
            self.transport.write(control_answer(self.plan, event))

    def line_too_long(self) -> None:
        self.kill()

    def process_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        self.ended = True
        self._cancel_ttl()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.pool._ended(self, exit_code, signal, stderr)
        self.exited.callback(None)

    # -- the pool's handling

    def kill(self) -> None:
        self._cancel_ttl()
        if self.transport is not None and not self.ended:
            try:
                # It has done nothing worth a grace period.
                send_signal(self.pool.tether, self.transport, "KILL")
            except ProcessExitedAlready:
                pass

    def _cancel_ttl(self) -> None:
        if self._ttl is not None and self._ttl.active():
            self._ttl.cancel()
        self._ttl = None


@define(eq=False)
class WarmPool:
    """
    Up to `size` pre-started processes, for the most recently requested shapes.
    The runner counts them inside its concurrency limit and evicts one when a
    request needs the slot.
    """

    reactor: Any  # IReactorProcess and IReactorTime
    size: int = 1
    ttl: float = 600.0
    scratch_root: str | None = None
    tether: Tether | None = None  # ties each CLI's life to the daemon's
    _waiting: list[WarmProcess] = field(factory=list)  # oldest first
    _shapes: OrderedDict = field(factory=OrderedDict)  # warm_key -> (plan, last seen, times); newest last
    _dying: set = field(factory=set)  # killed, not yet reaped
    _stopping: bool = False
    hits: int = 0  # requests that took a pre-started process
    misses: int = 0  # requests that found none of their shape

    @property
    def count(self) -> int:
        return len(self._waiting)

    def ready_count(self) -> int:
        return sum(w.ready for w in self._waiting)

    def has(self, plan: RunPlan) -> bool:
        return any(w.plan.warm_key == plan.warm_key for w in self._waiting)

    def take(self, plan: RunPlan) -> WarmProcess | None:
        """A live process for this plan's shape (a ready one first), out of the pool."""
        key = plan.warm_key
        matching = [w for w in self._waiting if w.plan.warm_key == key and not w.ended]
        if not matching:
            self.misses += 1
            return None
        self.hits += 1
        chosen = next((w for w in matching if w.ready), matching[0])
        self._waiting.remove(chosen)
        chosen._cancel_ttl()
        return chosen

    def note(self, plan: RunPlan, room: int) -> None:
        """A request of this shape arrived; `room` processes may still be started."""
        if self.size <= 0:
            return
        key = plan.warm_key
        _, _, times = self._shapes.pop(key, (None, None, 0))
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

    def _evict(self, warm: WarmProcess) -> None:
        self._waiting.remove(warm)
        self._dying.add(warm)
        warm.kill()

    def _start(self, plan: RunPlan) -> bool:
        warm = WarmProcess(self, plan)
        try:
            warm.transport, warm.protocol, warm.workdir = spawn(
                self.reactor, plan, warm, self.scratch_root, plan.initialize or BARE_INITIALIZE,
                self.tether)
        except Exception as e:  # a system prompt that cannot be written, too: no request fails
            log.warn("Could not pre-start a CLI process: {error}", error=repr(e))
            return False
        warm._ttl = self.reactor.callLater(self.ttl, self._recycle, warm)
        self._waiting.append(warm)
        return True

    def _recycle(self, warm: WarmProcess) -> None:
        # Idle too long: a fresh process replaces it (if its shape is still wanted).
        warm._ttl = None
        if warm in self._waiting:
            self._evict(warm)
            self.refill(1)

    def _ended(self, warm: WarmProcess, exit_code: int | None, signal: int | None,
               stderr: str) -> None:
        if warm in self._dying:
            self._dying.discard(warm)
            return
        if warm in self._waiting:
            # Died while waiting: never handed out; the next request of its shape starts another.
            self._waiting.remove(warm)
            log.warn("A pre-started CLI process exited while waiting (exit {code}, signal {signal}): "
                     "{stderr}", code=exit_code, signal=signal, stderr=stderr[-300:])

    def stop(self) -> list[Deferred]:
        """Kill every waiting process; the Deferreds fire when they are reaped."""
        self._stopping = True
        for warm in list(self._waiting):
            self._evict(warm)
        return [warm.exited for warm in self._dying]
