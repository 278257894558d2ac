"""
Errors in OpenAI's shape, `{"error": {message, type, param, code}}`, which
the Responses API shares. Pure.
"""

from __future__ import annotations

from claude_proxy.errors import USAGE_LIMIT, APIError


def openai_error(error: APIError) -> tuple[int, dict]:
    """
    A spent plan window in ChatGPT's own shape of it (error.type, resets_at):
    what Codex reads to tell its user the limit and when it resets.
    """
    body = error.to_json()
    if error.code == USAGE_LIMIT:
        body["error"]["type"] = USAGE_LIMIT
        if error.resets_at is not None:
            body["error"]["resets_at"] = error.resets_at
            body["error"]["resets_in_seconds"] = error.retry_after
    return error.status, body
