"""
One line of the CLI's stream-json output in, one typed event (or nothing) out.

Only what the proxy acts on is typed; every other line (init repeats, status,
hooks, tool results...) parses to None.
"""

from __future__ import annotations

import json

from attrs import frozen


@frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @classmethod
    def from_cli(cls, usage: object) -> Usage:
        if not isinstance(usage, dict):
            return cls()

        def count(key: str) -> int:
            value = usage.get(key)
            return value if isinstance(value, int) else 0

        return cls(
            count("input_tokens"),
            count("output_tokens"),
            count("cache_read_input_tokens"),
            count("cache_creation_input_tokens"),
        )

    @property
    def prompt_tokens(self) -> int:
        # The API's input_tokens leaves out cached tokens; OpenAI's prompt_tokens counts them.
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens

    def to_openai(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_tokens},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }


@frozen
class MessageStart:
    """The API accepted the request and began its answer (stream_event message_start)."""

    model: str


@frozen
class TextDelta:
    text: str


@frozen
class ApiRetry:
    """The CLI is retrying a failed API call (system/api_retry)."""

    attempt: int
    error_status: int | None


@frozen
class Result:
    """The end of the turn: the authoritative text, usage and error state."""

    is_error: bool
    subtype: str
    text: str
    stop_reason: str | None
    api_error_status: int | None
    usage: Usage


@frozen
class RateLimit:
    """A subscription limit the API reported (rate_limit_event), e.g. the 5-hour window."""

    status: str
    resets_at: int | None
    kind: str


Event = MessageStart | TextDelta | ApiRetry | RateLimit | Result


def parse_line(line: bytes) -> Event | None:
    """
    Parse one stdout line. Lines that are not JSON objects are ignored: the CLI
    owns its stdout, but a stray line must not break a response.
    """
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == "stream_event":
        event = obj.get("event")
        if not isinstance(event, dict):
            return None
        etype = event.get("type")
        if etype == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                if isinstance(text, str) and text:
                    return TextDelta(text)
        elif etype == "message_start":
            message = event.get("message")
            model = message.get("model") if isinstance(message, dict) else None
            return MessageStart(model if isinstance(model, str) else "")
        return None
    if kind == "result":
        text = obj.get("result")
        status = obj.get("api_error_status")
        return Result(
            is_error=bool(obj.get("is_error")),
            subtype=str(obj.get("subtype", "")),
            text=text if isinstance(text, str) else "",
            stop_reason=obj.get("stop_reason") if isinstance(obj.get("stop_reason"), str) else None,
            api_error_status=status if isinstance(status, int) else None,
            usage=Usage.from_cli(obj.get("usage")),
        )
    if kind == "rate_limit_event":
        info = obj.get("rate_limit_info")
        if not isinstance(info, dict):
            return None
        resets = info.get("resetsAt")
        return RateLimit(str(info.get("status", "")), resets if isinstance(resets, int) else None,
                         str(info.get("rateLimitType", "")))
    if kind == "system" and obj.get("subtype") == "api_retry":
        status = obj.get("error_status")
        attempt = obj.get("attempt")
        return ApiRetry(attempt if isinstance(attempt, int) else 0,
                        status if isinstance(status, int) else None)
    return None
