"""
One APIError in the shape of the wire API a request speaks: OpenAI's
`{"error": {message, type, param, code}}` or Anthropic's
`{"type": "error", "error": {type, message}}`. Every answer the daemon gives,
from the gate's refusals to a stream's last event, goes through here. Pure.
"""

from __future__ import annotations

from claude_proxy.errors import APIError

ANTHROPIC_PATH = b"/v1/messages"

# Anthropic's error types by HTTP status; the rest of 5xx are "api_error".
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
# Anthropic says "overloaded" with 529, which its SDKs and Claude Code retry.
OVERLOADED = "upstream_overloaded"


def speaks_anthropic(path: bytes, anthropic_version: bytes | None) -> bool:
    """Whether a request is answered in Anthropic's shape: its paths, or its SDK's header."""
    return path == ANTHROPIC_PATH or path.startswith(ANTHROPIC_PATH + b"/") \
        or anthropic_version is not None


# A spent plan window: ChatGPT's own shape of it (error.type, resets_at) is
# what Codex reads to tell its user the limit and when it resets.
USAGE_LIMIT = "usage_limit_reached"
UNIFIED = "anthropic-ratelimit-unified-"


def openai_error(error: APIError) -> tuple[int, dict]:
    body = error.to_json()
    if error.code == USAGE_LIMIT:
        body["error"]["type"] = USAGE_LIMIT
        if error.resets_at is not None:
            body["error"]["resets_at"] = error.resets_at
            body["error"]["resets_in_seconds"] = error.retry_after
    return error.status, body


def unified_headers(error: APIError) -> dict[str, str]:
    """
    The API's unified rate-limit headers an Anthropic-shaped usage-limit 429
    carries whatever else is known of the account: Claude Code tells its user
    the limit and its reset from them, and does not retry.
    """
    if error.code != USAGE_LIMIT:
        return {}
    headers = {f"{UNIFIED}status": "rejected"}
    if error.resets_at is not None:
        headers[f"{UNIFIED}reset"] = str(error.resets_at)
    return headers


def anthropic_error(error: APIError) -> tuple[int, dict]:
    status = 529 if error.code == OVERLOADED else error.status
    kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


def shaped_error(path: bytes, anthropic_version: bytes | None,
                 error: APIError) -> tuple[int, dict]:
    """The status and body of an error answer to a request for `path`."""
    if speaks_anthropic(path, anthropic_version):
        return anthropic_error(error)
    return openai_error(error)
