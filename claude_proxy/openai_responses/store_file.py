"""The stored responses' rows in the daemon's state file (claude_proxy.state)."""

from __future__ import annotations

from attrs import define
from twisted.logger import Logger

from claude_proxy.openai_responses.store import ResponseStore
from claude_proxy.state import StateFile

log = Logger()


@define
class StoredResponses:
    """A ResponseStore's Backing: each response kept or let go, written in order."""

    state: StateFile

    def saved(self, response_id: str, at: float, response: str, context: str) -> None:
        self.state.write("INSERT OR REPLACE INTO responses (id, at, response, context) "
                         "VALUES (?, ?, ?, ?)", (response_id, at, response, context))

    def dropped(self, response_id: str) -> None:
        self.state.write("DELETE FROM responses WHERE id = ?", (response_id,))

    def load(self, store: ResponseStore) -> None:
        """Fill the store from the file, oldest first (its bounds and time to live apply)."""
        store.backing = self  # what expired or is over the bounds meanwhile leaves the file too
        rows = self.state.read("SELECT id, at, response, context FROM responses ORDER BY at")
        for response_id, at, response, context in rows:
            try:
                store.restore(at, response, context)
            except (ValueError, KeyError, TypeError):
                log.warn("Stored response {id} is unreadable; dropped", id=response_id)
                self.dropped(response_id)
        log.info("{count} stored responses read from {path}", count=len(store),
                 path=self.state.path)
