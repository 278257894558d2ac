"""
Errors in Anthropic's shape, `{"type": "error", "error": {type, message}}`,
with its types; and the unified rate-limit headers a spent window carries.
Pure.
"""

from __future__ import annotations

from claude_proxy.errors import USAGE_LIMIT, APIError

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
UNIFIED = "anthropic-ratelimit-unified-"


def anthropic_error(error: APIError) -> tuple[int, dict]:
    status = 529 if error.code == OVERLOADED else error.status
    kind = ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


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
