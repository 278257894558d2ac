"""Helpers for reading what the encoders and the daemon stream, shared by the door tests."""

from __future__ import annotations

import json

from attrs import frozen

from claude_proxy.answer import Answer

DONE = "[DONE]"


@frozen
class Event:
    """One server-sent event: its `event:` name (None without one) and its data."""

    name: str | None
    data: str


def sse(raw: bytes | str) -> list[Event]:
    """
    The events of a text/event-stream body. Comment lines (the heartbeats) are
    left out; a line that is neither a comment nor a field fails the test.
    """
    text = raw.decode() if isinstance(raw, bytes) else raw
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, colon, value = line.partition(":")
            assert colon and field in ("event", "data", "id", "retry"), f"not SSE: {line!r}"
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append(Event(name, "\n".join(data)))
    return events


def data_events(raw: bytes | str) -> list:
    """The data of each event, JSON decoded; OpenAI's closing "[DONE]" stays that string."""
    return [e.data if e.data == DONE else json.loads(e.data) for e in sse(raw)]


def named_events(raw: bytes | str) -> list[dict]:
    """The data of a stream of named SSE events; each `event:` line must name its data's type."""
    out = []
    for event in sse(raw):
        payload = json.loads(event.data)
        assert event.name == payload["type"], (event.name, payload)
        out.append(payload)
    return out


def answered(*events, result=None) -> Answer:
    """An answer fed these CLI events, then the result line if given."""
    answer = Answer()
    for event in events:
        answer.feed(event)
    if result is not None:
        answer.result(result)
    return answer
