"""
Stored responses, for `previous_response_id`, GET and DELETE: bounded in
count and in bytes, each kept for a time to live; the oldest go first.
Nothing is stored for `store: false`.

They are read from memory; with a state file (`Backing`), every response
kept or let go is written there too, and the store is filled from it at
start-up, so stored responses outlive a restart.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Protocol

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime

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


class Backing(Protocol):
    """Where the store's changes are also written (the state file)."""

    def saved(self, response_id: str, at: float, response: str, context: str) -> None: ...

    def dropped(self, response_id: str) -> None: ...


def context_json(context: Context) -> str:
    return json.dumps({"system": list(context.system),
                       "turns": [[role, list(blocks)] for role, blocks in context.turns]})


def context_of(text: str) -> Context:
    obj = json.loads(text)
    return Context(tuple(obj["system"]),
                   tuple((role, tuple(blocks)) for role, blocks in obj["turns"]))


@define
class ResponseStore:
    reactor: IReactorTime
    max_responses: int = MAX_RESPONSES
    max_bytes: int = MAX_BYTES
    ttl: float = TTL_SECONDS
    backing: Backing | None = None
    _items: OrderedDict[str, Stored] = field(factory=OrderedDict, init=False)
    _bytes: int = field(default=0, init=False)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response: dict, context: Context) -> None:
        self._keep(response, context, json.dumps(response), context_json(context),
                   self.reactor.seconds(), save=True)

    def restore(self, at: float, response: str, context: str) -> None:
        """One response as the state file kept it (at start-up, oldest first)."""
        self._keep(json.loads(response), context_of(context), response, context, at, save=False)

    def _keep(self, response: dict, context: Context, response_text: str, context_text: str,
              at: float, save: bool) -> None:
        size = len(response_text) + len(context_text)
        if size > self.max_bytes:
            return  # bigger than the whole store: it would only push everything else out
        self.delete(response["id"])
        self._items[response["id"]] = Stored(response, context, at, size)
        self._bytes += size
        if save and self.backing is not None:
            self.backing.saved(response["id"], at, response_text, context_text)
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
        if self.backing is not None:
            self.backing.dropped(response_id)

    def _expire(self) -> None:
        # Stored in time order, so the expired ones are at the front.
        deadline = self.reactor.seconds() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.at > deadline:
                break
            self._pop(oldest.response["id"])
