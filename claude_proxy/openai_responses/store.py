"""
Stored responses, for `previous_response_id`, GET and DELETE: in memory only
(gone when the daemon stops), bounded in count and in bytes, each kept for a
time to live; the oldest go first. Nothing is stored for `store: false`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from attrs import define, field, frozen

from claude_proxy.openai_responses.parse import Context

MAX_RESPONSES = 1000
MAX_BYTES = 64 * 2**20
TTL_SECONDS = 24 * 3600


@frozen
class Stored:
    response: dict  # the response object, as GET returns it
    context: Context  # its input and output as turns, for a response that continues it
    at: float  # when it was stored
    size: int  # its bytes as JSON, counted against the bound


@define
class ResponseStore:
    clock: Any  # IReactorTime
    max_responses: int = MAX_RESPONSES
    max_bytes: int = MAX_BYTES
    ttl: float = TTL_SECONDS
    _items: OrderedDict[str, Stored] = field(factory=OrderedDict, init=False)
    _bytes: int = field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response: dict, context: Context) -> None:
        size = len(json.dumps(response)) + len(json.dumps(context.turns)) + \
            sum(len(s) for s in context.system)
        if size > self.max_bytes:
            return  # bigger than the whole store: it would only push everything else out
        self.delete(response["id"])
        self._items[response["id"]] = Stored(response, context, self.clock.seconds(), size)
        self._bytes += size
        self._expire()
        while len(self._items) > self.max_responses or self._bytes > self.max_bytes:
            self._pop(next(iter(self._items)))

    def get(self, response_id: str) -> Stored | None:
        self._expire()
        return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        if response_id not in self._items:
            return False
        self._pop(response_id)
        return True

    def _pop(self, response_id: str) -> None:
        self._bytes -= self._items.pop(response_id).size

    def _expire(self) -> None:
        # Stored in time order, so the expired ones are at the front.
        deadline = self.clock.seconds() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.at > deadline:
                break
            self._pop(oldest.response["id"])
