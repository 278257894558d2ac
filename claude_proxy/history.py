"""
The recent-request history the status page shows: one record per request to
a wire API (when, which API, which client, model, account, status, time to
first token, duration, tokens), never a prompt, an answer or a key. Kept in
memory for the page (the latest requests, and per-minute totals of the last
hour) and, with a state file, written there and pruned after a few days, so
a restart does not blank the page.
"""

from __future__ import annotations

import json
import re
from collections import deque
from attrs import asdict, define, field, frozen

from claude_proxy.exchange import Exchange
from claude_proxy.state import StateFile

RECENT = 100  # records kept for the page
MINUTES = 60  # the chart's span
KEEP_SECONDS = 3 * 86400  # in the state file
PRUNE_EVERY = 3600.0
# A client known by its User-Agent: (pattern, name). Otherwise its first product token.
CLIENTS = (
    (re.compile(r"codex", re.I), "Codex"),
    (re.compile(r"^claude-(cli|code)", re.I), "Claude Code"),
    (re.compile(r"openclaw", re.I), "OpenClaw"),
    (re.compile(r"^OpenAI/Python"), "openai (Python)"),
    (re.compile(r"^OpenAI/JS"), "openai (JS)"),
    (re.compile(r"^Anthropic/Python"), "anthropic (Python)"),
    (re.compile(r"^Anthropic/JS"), "anthropic (JS)"),
    (re.compile(r"^Mozilla/"), "browser"),
)
_PRODUCT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}")


def client_of(user_agent: bytes | None) -> str:
    """A short name for the client that sent a User-Agent (no version, nothing else of it)."""
    text = (user_agent or b"").decode("latin-1").strip()
    for pattern, name in CLIENTS:
        if pattern.search(text):
            return name
    product = _PRODUCT.match(text)
    return product.group(0) if product else "-"


@frozen
class Record:
    at: float  # unix seconds, when the request arrived
    api: str  # Chat, Responses, Messages
    client: str
    model: str
    account: str | None
    status: int  # 499: the client went away
    error: str | None  # the error code, also of an error sent as an event after a 200
    first_token: float | None  # seconds
    duration: float  # seconds
    tokens_in: int  # the whole prompt, cached tokens included
    cache_read: int
    tokens_out: int

    @property
    def failed(self) -> bool:
        return self.status >= 400 or self.error is not None

    def to_json(self) -> dict:
        return {**asdict(self), "failed": self.failed}


@define
class Minute:
    requests: int = 0
    failures: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


@define
class History:
    """The latest requests and the last hour by minute; written to the state file if any."""

    state: StateFile | None = None
    keep_seconds: float = KEEP_SECONDS
    _recent: deque[Record] = field(factory=lambda: deque(maxlen=RECENT), init=False)
    _minutes: dict[int, Minute] = field(factory=dict, init=False)
    _pruned: float = field(default=0.0, init=False)

    def add(self, record: Record) -> None:
        self._count(record)
        if self.state is not None:
            self.state.write("INSERT INTO requests (at, record) VALUES (?, ?)",
                             (record.at, json.dumps(asdict(record))))
            if record.at - self._pruned >= PRUNE_EVERY:
                self._prune(record.at)

    def _count(self, record: Record) -> None:
        self._recent.appendleft(record)
        minute = self._minutes.setdefault(int(record.at // 60), Minute())
        minute.requests += 1
        minute.failures += record.failed
        minute.tokens_in += record.tokens_in
        minute.tokens_out += record.tokens_out
        oldest = int(record.at // 60) - MINUTES
        for key in [k for k in self._minutes if k <= oldest]:
            del self._minutes[key]

    def _prune(self, now: float) -> None:
        self._pruned = now
        assert self.state is not None
        self.state.write("DELETE FROM requests WHERE at < ?", (now - self.keep_seconds,))

    def load(self, now: float) -> None:
        """At start-up: the latest records and the last hour's, from the state file."""
        assert self.state is not None
        rows = self.state.read(
            "SELECT record FROM requests WHERE at >= ? OR rowid IN "
            "(SELECT rowid FROM requests ORDER BY at DESC LIMIT ?) ORDER BY at",
            (now - MINUTES * 60, RECENT))
        for (text,) in rows:
            try:
                self._count(Record(**json.loads(text)))
            except (ValueError, TypeError):
                continue  # a record of another version: the page does without it
        self._prune(now)

    def recent(self) -> list[Record]:
        """Newest first."""
        return list(self._recent)

    def per_minute(self, now: float) -> list[dict]:
        """The last hour, oldest minute first, each minute's start in unix seconds."""
        current = int(now // 60)
        return [{"at": m * 60, **asdict(self._minutes.get(m, Minute()))}
                for m in range(current - MINUTES + 1, current + 1)]


def record_of(api: str | None, user_agent: bytes | None, exchange: Exchange, status: int,
              seconds: float) -> Record | None:
    """The record of a finished request, if it went to a wire API (`api`: its name)."""
    if api is None:
        return None
    usage = exchange.usage
    return Record(at=exchange.started, api=api, client=client_of(user_agent),
                  model=exchange.model, account=exchange.account, status=status,
                  error=exchange.error_code, first_token=exchange.first_token,
                  duration=seconds, tokens_in=usage.prompt_tokens if usage else 0,
                  cache_read=usage.cache_read_tokens if usage else 0,
                  tokens_out=usage.output_tokens if usage else 0)
