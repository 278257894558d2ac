"""
Live sessions: CLI processes kept after a turn, each with its conversation,
so the conversation's next request sends only what is new (a user message, or
the results of the tool calls the session waits on) instead of starting a CLI
and replaying everything.

At most `size` are kept; the least recently used goes first, one idle longer
than `ttl` is ended, and the runner evicts one whenever a request needs its
slot: an idle session never keeps a request waiting. A session is taken out
while it runs a turn, so a busy session is never shared.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from claude_proxy.continuation import Continuation
from claude_proxy.process import ProcessReactor
from claude_proxy.session import ENDED, IDLE, TOOLS, CLISession

log = Logger()

# Why a request with history was not continued (the /metrics label).
NO_SESSION = "no_session"  # no live session holds its history: new, edited, regenerated, expired
TOOL_RESULTS = "tool_results"  # one waits on tool calls, and these are not exactly their results
# Or one does, under another model, system prompt, tools, options or API key:
# "<part>_changed", the first part of the shape that differs (live.shape_of).
# Thinking, effort and max tokens change in place, but for a turn held on tool
# calls: its results with other ones are "thinking_changed", "effort_changed"…


def _changed(held: tuple[tuple[str, str], ...], wanted: tuple[tuple[str, str], ...]) -> str:
    """Which part of a session's shape a request differs in: `model_changed`, …"""
    part = next(name for (name, a), (_, b) in zip(held, wanted) if a != b)
    return f"{part}_changed"


def _held_for(session: CLISession, turn: Continuation) -> str | None:
    """
    Why a session waiting on tool calls cannot go on with this request (None:
    it can): the request is not exactly their results, or asks for other
    settings, which a turn under way does not take.
    """
    if session.state != TOOLS or turn.results is None \
            or session.pending_calls != tuple(r.tool_id for r in turn.results):
        return TOOL_RESULTS
    change = session.settings.change(turn.settings) if session.settings is not None else None
    return None if change is None else f"{change}_changed"


@define(eq=False)
class _Parked:
    shape: tuple[tuple[str, str], ...]
    conversation: str  # the digest of its conversation, up to the answer the client got
    ttl: IDelayedCall


@frozen
class SessionsSnapshot:
    """The live sessions at one moment: what /health, /metrics and the status page read."""

    size: int
    ttl: float
    live: int  # sessions kept now
    waiting_for_tools: int  # of them, those whose turn waits on the client's tool results
    continued: int  # requests that continued a live session
    fallbacks: Mapping[str, int]  # requests with history that did not, by why
    ended: Mapping[str, int]  # sessions let go, by why: ttl, lru, room, stopping, exited


@define(eq=False)
class LiveSessions:
    reactor: ProcessReactor
    size: int = 3
    ttl: float = 600.0
    _continued: int = field(default=0, init=False)
    _fallbacks: Counter[str] = field(factory=Counter, init=False)
    _ended: Counter[str] = field(factory=Counter, init=False)
    _parked: OrderedDict[CLISession, _Parked] = field(factory=OrderedDict)  # least recent first
    _dying: set[CLISession] = field(factory=set)
    _stopping: bool = False

    @property
    def count(self) -> int:
        return len(self._parked)

    def snapshot(self) -> SessionsSnapshot:
        return SessionsSnapshot(self.size, self.ttl, self.count,
                                sum(s.state == TOOLS for s in self._parked), self._continued,
                                dict(self._fallbacks), dict(self._ended))

    def park(self, session: CLISession, shape: tuple[tuple[str, str], ...],
             conversation: str) -> None:
        """Keep a session whose turn is done (or waits on tool results) for its next request."""
        if self._stopping or not session.alive:
            self._end(session, "room")
            return
        ttl = self.reactor.callLater(self.ttl, self._expire, session)
        self._parked[session] = _Parked(shape, conversation, ttl)
        session.exited.addBoth(lambda _: self._exited(session))
        while len(self._parked) > self.size:
            self._end(next(iter(self._parked)), "lru")

    def take(self, turn: Continuation) -> CLISession | None:
        """The live session this request continues, out of the keeping; else None (and why)."""
        if turn.history is None:
            return None  # a first turn continues nothing
        found = [s for s, p in self._parked.items()
                 if p.conversation == turn.history and s.alive]
        shaped = [s for s in found if self._parked[s].shape == turn.shape]
        for session in reversed(shaped):  # the most recent first
            if session.state == IDLE or _held_for(session, turn) is None:
                self._release(session)
                self._continued += 1
                return session
        if shaped:
            why = _held_for(shaped[-1], turn) or TOOL_RESULTS
        elif found:
            why = _changed(self._parked[found[-1]].shape, turn.shape)
        else:
            why = NO_SESSION
        self._fallbacks[why] += 1
        return None

    def evict_one(self) -> bool:
        """Free a slot for a request: the least recently used session goes."""
        if not self._parked:
            return False
        self._end(next(iter(self._parked)), "room")
        return True

    def stop(self) -> list[Deferred]:
        """End every live session; the Deferreds fire when they are reaped."""
        self._stopping = True
        for session in list(self._parked):
            self._end(session, "stopping")
        return [s.exited for s in self._dying]

    def _release(self, session: CLISession) -> None:
        parked = self._parked.pop(session)
        if parked.ttl.active():
            parked.ttl.cancel()

    def _expire(self, session: CLISession) -> None:
        if session in self._parked:
            self._end(session, "ttl")

    def _end(self, session: CLISession, why: str) -> None:
        if session in self._parked:
            self._release(session)
        self._ended[why] += 1
        if session.state != ENDED:
            self._dying.add(session)
            session.exited.addBoth(lambda _: self._dying.discard(session))
            session.kill()  # it holds no answer anyone waits for

    def _exited(self, session: CLISession) -> None:
        if session in self._parked:
            log.info("A live CLI session exited while it waited (pid gone); it is dropped")
            self._release(session)
            self._ended["exited"] += 1
