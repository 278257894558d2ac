"""Helpers for reading what the encoders and the daemon stream, shared by the door tests."""

import json

from claude_proxy.answer import Answer


def named_events(raw: bytes) -> list[dict]:
    """The data of a stream of named SSE events; each `event:` line must name its data's type."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        name, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
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
