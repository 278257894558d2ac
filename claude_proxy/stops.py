"""
OpenAI `stop` sequences, applied to text as it streams. Pure.

The text is cut at the earliest place any stop sequence starts, the same cut
as applying the stops to the whole text at once, however it was split into
deltas; so a streamed answer and a non-streamed one always agree.
"""

from __future__ import annotations

from attrs import define, field

from claude_proxy.errors import bad_request

# OpenAI's own limit.
MAX_STOPS = 4


def parse_stop(value: object) -> tuple[str, ...]:
    """
    Validate a request's `stop`: null, a string, or a list of up to 4 strings.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        if len(value) > MAX_STOPS:
            raise bad_request(f"stop may hold at most {MAX_STOPS} sequences.", "stop")
        items = value
    else:
        raise bad_request("stop must be a string or a list of strings.", "stop")
    for item in items:
        if not isinstance(item, str) or not item:
            raise bad_request("stop sequences must be non-empty strings.", "stop")
    return tuple(items)


def _failure(stop: str) -> tuple[int, ...]:
    """
    The KMP failure table: entry k is the length of the longest proper border
    of stop[:k], i.e. where a partial match of length k falls back to.
    """
    table = [0] * (len(stop) + 1)
    k = 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k]
        if stop[i] == stop[k]:
            k += 1
        table[i + 1] = k
    return tuple(table)


@define
class StopMatcher:
    """
    Cuts streamed text at the first stop sequence.

    Each stop keeps a KMP state (how much of it the text seen so far ends
    with), carried from feed to feed, so a stop split across deltas is found
    and each character costs O(1) per stop, however long the stops are.
    Positions (`_start`, `_hit`) count characters from the start of the stream.
    """

    stops: tuple[str, ...]
    matched: bool = field(default=False, init=False)
    _tables: tuple[tuple[int, ...], ...] = field(init=False)
    _states: list[int] = field(init=False)
    # Text seen but not yet emitted; it starts at position _start.
    _pending: str = field(default="", init=False)
    _start: int = field(default=0, init=False)
    # Where the earliest complete match starts, once one is seen, and which stop it is.
    _hit: int | None = field(default=None, init=False)
    _hit_stop: str | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._tables = tuple(_failure(s) for s in self.stops)
        self._states = [0] * len(self.stops)

    @property
    def matched_stop(self) -> str | None:
        """The stop sequence that cut the text, once matched."""
        return self._hit_stop if self.matched else None

    def feed(self, text: str) -> tuple[str, bool]:
        """
        Take the next delta; give back the text that may be emitted now, and
        whether a stop has matched (after which nothing more is emitted).
        """
        if self.matched:
            return "", True
        if not self.stops:
            return text, False
        offset = self._start + len(self._pending)
        for n in range(len(self.stops)):
            self._scan(n, text, offset)
        return self._settle(self._pending + text)

    def flush(self) -> str:
        """
        The held-back tail, at the end of the stream: a partial stop that can
        no longer complete is ordinary text.
        """
        if self.matched:
            return ""
        tail = self._pending
        if self._hit is not None:
            # A match waited only on longer partial stops starting before it.
            tail = tail[: self._hit - self._start]
            self.matched = True
        self._start += len(self._pending)
        self._pending = ""
        self._states = [0] * len(self.stops)
        return tail

    def _scan(self, n: int, text: str, offset: int) -> None:
        """
        Advance stop n's KMP state over text, which starts at position offset.
        """
        stop, table, q = self.stops[n], self._tables[n], self._states[n]
        size, first = len(stop), stop[0]
        i, length = 0, len(text)
        while i < length:
            if q == 0:
                # Nothing partly matched: let str.find skip to a possible start.
                i = text.find(first, i)
                if i < 0:
                    break
                q = 1
            else:
                c = text[i]
                while q and stop[q] != c:
                    q = table[q]
                if stop[q] == c:
                    q += 1
            if q == size:
                begin = offset + i - size + 1
                if self._hit is None or begin < self._hit:
                    self._hit, self._hit_stop = begin, stop
                q = table[q]
            i += 1
        self._states[n] = q

    def _settle(self, unemitted: str) -> tuple[str, bool]:
        end = self._start + len(unemitted)
        # The longest partial stop is the earliest one still able to complete.
        live = end - max(self._states)
        if self._hit is not None and self._hit <= live:
            self.matched = True
            self._pending = ""
            return unemitted[: self._hit - self._start], True
        # Hold back from the earliest partial stop (which, with a match seen,
        # starts before it and might yet complete as an earlier match).
        cut = live - self._start
        self._pending = unemitted[cut:]
        self._start = live
        return unemitted[:cut], False
