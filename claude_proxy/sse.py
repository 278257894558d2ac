"""
Server-sent events framing, for every wire API's stream. Pure.
"""

from __future__ import annotations

import json

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# A comment line: clients ignore it, proxies and watchdogs see bytes.
KEEP_ALIVE = b": keep-alive\n\n"


def dumps(obj: object) -> bytes:
    """Compact JSON as UTF-8."""
    return _ENCODER.encode(obj).encode("utf-8")


def frame(data: bytes, event: str | None = None) -> bytes:
    """One event: `data` must be a single line (compact JSON is)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode("ascii") + b"\ndata: " + data + b"\n\n"


def template(event: str | None, whole: dict, marker: str = "\x00") -> tuple[bytes, bytes]:
    """
    The bytes before and after `marker` (a string value inside `whole`) in
    its frame. Token deltas are the hot path: their frames differ only in the
    text, so only the text is encoded each time.
    """
    encoded = frame(dumps(whole), event)
    before, _, after = encoded.partition(dumps(marker))
    return before, after


def fill(frame_template: tuple[bytes, bytes], text: str) -> bytes:
    return frame_template[0] + dumps(text) + frame_template[1]
