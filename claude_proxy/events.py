"""
One line of the CLI's stream-json output in, one typed event (or nothing) out.

Only what the proxy acts on is typed; every other line (init repeats, status,
hooks, tool results...) parses to None.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import field, frozen


_decode = json.JSONDecoder().decode


@frozen
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0  # part of output_tokens

    @classmethod
    def from_cli(cls, usage: object) -> Usage:
        if not isinstance(usage, dict):
            return cls()

        def count(key: str) -> int:
            value = usage.get(key)
            return value if isinstance(value, int) else 0

        details = usage.get("output_tokens_details")
        thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
        return cls(
            count("input_tokens"),
            count("output_tokens"),
            count("cache_read_input_tokens"),
            count("cache_creation_input_tokens"),
            thinking if isinstance(thinking, int) else 0,
        )

    @property
    def prompt_tokens(self) -> int:
        # The API's input_tokens leaves out cached tokens; the whole prompt counts them.
        return self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens


@frozen
class MessageStart:
    """The API accepted the request and began its answer (stream_event message_start)."""

    model: str
    usage: Usage = Usage()


@frozen
class TextDelta:
    text: str


@frozen
class ThinkingDelta:
    text: str


@frozen
class ThinkingSignature:
    """The signature that seals a thinking block (signature_delta), for sending it back later."""

    signature: str


@frozen
class ThinkingTokens:
    """The CLI's running estimate of the thinking tokens (system/thinking_tokens)."""

    estimated: int


@frozen
class ToolUseStart:
    """The model began a tool call (content_block_start of a tool_use block)."""

    index: int
    tool_id: str
    name: str


@frozen
class ToolInputDelta:
    """A piece of a tool call's JSON arguments (input_json_delta)."""

    index: int
    partial_json: str


@frozen
class AssistantToolUse:
    """A whole tool call as the CLI records it (an `assistant` line); also after a non-streamed retry."""

    tool_id: str
    name: str
    input: Any = field(eq=False)


@frozen
class ToolPermission:
    """The CLI asks to run a tool call (can_use_tool): the model's message is complete."""

    tool_id: str


@frozen
class MessageDelta:
    """The API's stop reason for the message, with its output token count."""

    stop_reason: str | None
    output_tokens: int


@frozen
class ControlRequest:
    """The CLI asks its host something over the control channel (MCP traffic, permissions)."""

    request_id: str
    subtype: str
    request: dict = field(eq=False, repr=False)


@frozen
class ControlResponse:
    """The CLI answers a control request of the proxy's (initialize, settings)."""

    request_id: str
    # The initialize answer's models: each alias and the full id the CLI runs for it.
    aliases: tuple[tuple[str, str], ...] = ()
    error: str | None = None  # the CLI refused the request, and why


def _aliases(answer: object) -> tuple[tuple[str, str], ...]:
    models = answer.get("models") if isinstance(answer, dict) else None
    if not isinstance(models, list):
        return ()
    return tuple((m["value"], m["resolvedModel"]) for m in models
                 if isinstance(m, dict) and isinstance(m.get("value"), str)
                 and isinstance(m.get("resolvedModel"), str))


@frozen
class ApiRetry:
    """The CLI is retrying a failed API call (system/api_retry)."""

    attempt: int
    error_status: int | None
    # How long it waits first: the API's retry-after, plus jitter.
    retry_delay_ms: int | None = None


@frozen
class Result:
    """The end of the turn: the authoritative text, usage and error state."""

    is_error: bool
    subtype: str
    text: str
    stop_reason: str | None
    api_error_status: int | None
    usage: Usage
    structured_output: Any = None
    api_error_type: str = ""  # the API's error type ("invalid_request_error", ...)


@frozen
class Window:
    """One of the subscription's usage windows ("five_hour", "seven_day", ...)."""

    name: str
    utilization: float | None  # 0.0 to 1.0
    resets_at: int | None  # unix seconds
    status: str  # allowed, allowed_warning, rejected


@frozen
class RateLimit:
    """
    The subscription's state as the API reported it with an answer
    (rate_limit_event; CLI 2.1.330 prints one after each message it gets
    with the API's unified rate-limit headers, subscription logins only).
    """

    status: str  # of the representative window: allowed, allowed_warning, rejected
    resets_at: int | None
    kind: str  # the representative window, e.g. "five_hour"
    overage_status: str = ""  # extra usage: allowed, allowed_warning, rejected
    overage_disabled_reason: str = ""
    using_overage: bool = False  # this answer was drawn from extra (paid) usage
    windows: tuple[Window, ...] = ()


Event = (MessageStart | TextDelta | ThinkingDelta | ThinkingSignature | ThinkingTokens | ToolUseStart
         | ToolInputDelta | AssistantToolUse | ToolPermission | MessageDelta
         | ControlRequest | ControlResponse | ApiRetry | RateLimit | Result)


def parse_line(line: bytes) -> Event | None:
    """
    Parse one stdout line. Lines that are not JSON objects are ignored: the CLI
    owns its stdout, but a stray line must not break a response.
    """
    try:
        obj = _decode(line.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == "stream_event":
        event = obj.get("event")
        return _stream_event(event) if isinstance(event, dict) else None
    if kind == "assistant":
        message = obj.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        block = content[0] if isinstance(content, list) and len(content) == 1 else None
        if isinstance(block, dict) and block.get("type") == "tool_use":
            return AssistantToolUse(str(block.get("id", "")), str(block.get("name", "")),
                                    block.get("input"))
        return None
    if kind == "control_request":
        request = obj.get("request")
        if not isinstance(request, dict):
            return None
        return ControlRequest(str(obj.get("request_id", "")), str(request.get("subtype", "")), request)
    if kind == "control_response":
        response = obj.get("response")
        if not isinstance(response, dict):
            return None
        error = str(response.get("error", "")) if response.get("subtype") == "error" else None
        return ControlResponse(str(response.get("request_id", "")),
                               _aliases(response.get("response")), error)
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
            structured_output=obj.get("structured_output"),
            api_error_type=_str(obj.get("api_error_type")),
        )
    if kind == "rate_limit_event":
        info = obj.get("rate_limit_info")
        return _rate_limit(info) if isinstance(info, dict) else None
    if kind == "system" and obj.get("subtype") == "thinking_tokens":
        return ThinkingTokens(_int(obj.get("estimated_tokens")))
    if kind == "system" and obj.get("subtype") == "api_retry":
        status = obj.get("error_status")
        attempt = obj.get("attempt")
        delay = obj.get("retry_delay_ms")
        return ApiRetry(attempt if isinstance(attempt, int) else 0,
                        status if isinstance(status, int) else None,
                        delay if isinstance(delay, int) else None)
    return None


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _rate_limit(info: dict) -> RateLimit:
    resets = info.get("resetsAt")
    windows = info.get("unifiedWindows")
    return RateLimit(
        _str(info.get("status")), resets if isinstance(resets, int) else None,
        _str(info.get("rateLimitType")), _str(info.get("overageStatus")),
        _str(info.get("overageDisabledReason")), info.get("isUsingOverage") is True,
        tuple(_window(name, w) for name, w in windows.items() if isinstance(w, dict))
        if isinstance(windows, dict) else ())


def _window(name: str, window: dict) -> Window:
    utilization = window.get("utilization")
    resets = window.get("resetsAt")
    return Window(name, float(utilization) if isinstance(utilization, (int, float))
                  and not isinstance(utilization, bool) else None,
                  resets if isinstance(resets, int) else None, _str(window.get("status")))


def _stream_event(event: dict) -> Event | None:
    """One raw Anthropic SSE event, as the CLI relays it with --include-partial-messages."""
    etype = event.get("type")
    if etype == "content_block_delta":
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return None
        dtype = delta.get("type")
        if dtype == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            return TextDelta(delta["text"])
        if dtype == "thinking_delta" and isinstance(delta.get("thinking"), str) and delta["thinking"]:
            return ThinkingDelta(delta["thinking"])
        if dtype == "signature_delta" and isinstance(delta.get("signature"), str) and delta["signature"]:
            return ThinkingSignature(delta["signature"])
        if dtype == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return ToolInputDelta(_int(event.get("index")), delta["partial_json"])
        return None
    if etype == "content_block_start":
        block = event.get("content_block")
        if isinstance(block, dict) and block.get("type") == "tool_use":
            return ToolUseStart(_int(event.get("index")), str(block.get("id", "")),
                                str(block.get("name", "")))
        return None
    if etype == "message_start":
        message = event.get("message")
        if not isinstance(message, dict):
            return MessageStart("")
        model = message.get("model")
        return MessageStart(model if isinstance(model, str) else "", Usage.from_cli(message.get("usage")))
    if etype == "message_delta":
        delta = event.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        usage = event.get("usage")
        return MessageDelta(reason if isinstance(reason, str) else None,
                            _int(usage.get("output_tokens")) if isinstance(usage, dict) else 0)
    return None
