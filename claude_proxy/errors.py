"""
Errors in OpenAI's shape, and the mapping from CLI failures to them.

Everything here is pure: the runner hands over what it saw (a result event, an
exit status, the tail of stderr) and gets back the error the client should see.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from attrs import frozen


@frozen(auto_exc=True)
class APIError(Exception):
    """
    A failure the client sees as an HTTP status and an OpenAI error object.
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: int | None = None
    resets_at: int | None = None  # a spent usage window's reset (unix seconds), when known

    def to_json(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


# A spent plan window (the CLI's "You've hit your 5-hour limit").
USAGE_LIMIT = "usage_limit_reached"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", code, param)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist. Use one listed by GET /v1/models "
        "(claude-opus-4, claude-sonnet-4, claude-haiku-4) or a full claude-... id.",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


NOT_LOGGED_IN = (
    "The Claude Code CLI is not logged in (or its login expired). "
    "Run `claude` in a terminal, log in with /login, then retry."
)

# The API's refusal of requests it takes for a third-party app's, which it
# bills to extra usage only: "Third-party apps now draw from your extra usage,
# not your plan limits. ..." (a 400, seen even with plan headroom).
_THIRD_PARTY = "third-party apps"
THIRD_PARTY_REFUSED = (
    "The Claude API took this request for a third-party app's and refused to count it against "
    "your plan: such requests draw only on paid extra usage. Retrying will not help. You can "
    "serve from another account (--account), enable extra usage at claude.ai/settings/usage if "
    "you accept paying for it, or report it: the proxy runs the official Claude Code CLI."
)

# The API's refusal of a conversation over the model's context window. The CLI
# says only "Prompt is too long" (the API's words, with the token counts, stay
# inside it); clients key on the words (Claude Code compacts on them) or on
# OpenAI's code context_length_exceeded (the openai SDKs, Codex).
TOO_LONG = "prompt is too long"
PROMPT_TOO_LONG = (f"{TOO_LONG}: the conversation is over the model's context window. "
                   "Compact or shorten it and retry.")
# The API's own refusals of a request (its statuses and types); the CLI passes
# the API's message on as "API Error: 400 <message>".
_INVALID_STATUSES = (400, 413, 422)
_INVALID_TYPES = ("invalid_request_error", "request_too_large")
_API_PREFIX = re.compile(r"^api error: \d{3} ", re.IGNORECASE)

# How much of the CLI's own words a client may see: enough to act on, not a dump.
EXCERPT_CHARS = 300

_LOGIN_HINTS = ("not logged in", "/login", "failed to authenticate", "invalid api key",
                "oauth token has expired", "authentication_error")
_USAGE_HINTS = ("hit your",)  # "... (not your usage limit)" is a plain rate limit
_LIMIT_HINTS = ("rate limit", "rate_limit", "request rejected (429)", "limiting requests")
# Only overload: every 5xx is "a server-side issue" in the CLI's words.
_OVERLOAD_HINTS = ("overloaded",)
# "API Error: 500 ..." when a failure reaches us as text only (stderr).
_API_STATUS = re.compile(r"api error: (\d{3})\b")
# A plain 429 whose wait nobody told us (the CLI reports the API's retry-after
# only as the delay of its own retries): a short wait, like an overload's.
RATE_LIMIT_RETRY_AFTER = 10
OVERLOAD_RETRY_AFTER = 10


def excerpt(text: str) -> str:
    """
    A short, single-line excerpt of CLI output that is safe to show a client.
    """
    flat = " ".join(text.split())
    if len(flat) > EXCERPT_CHARS:
        flat = flat[: EXCERPT_CHARS - 1] + "…"
    return flat


def context_overflow() -> APIError:
    return APIError(400, PROMPT_TOO_LONG, "invalid_request_error", "context_length_exceeded")


def refused_request(text: str, api_status: int | None) -> APIError:
    """The API's refusal of the request itself: its status and its own words, not a 5xx."""
    if TOO_LONG in text.lower():
        return context_overflow()
    status = api_status if api_status in _INVALID_STATUSES else 400
    return APIError(status, _API_PREFIX.sub("", text.strip(), count=1) or text,
                    "invalid_request_error",
                    "request_too_large" if status == 413 else "invalid_request")


def classify_cli_error(text: str, api_status: int | None, now: float,
                       resets_at: int | None = None, retry_after: int | None = None,
                       api_type: str = "") -> APIError:
    """
    Map the text of an error result (and the API status and error type the CLI
    reports) to the error a client should get. `resets_at` is when a rejected
    subscription limit resets (unix seconds), from the CLI's rate_limit_event;
    `retry_after` the API's own wait for a 429, as the CLI's retries were told it.
    """
    lowered = text.lower()
    shown = excerpt(text)
    if api_status is None:
        found = _API_STATUS.search(lowered)
        api_status = int(found.group(1)) if found else None
    if _THIRD_PARTY in lowered and "extra usage" in lowered:
        return APIError(403, f"{THIRD_PARTY_REFUSED} (CLI said: {shown})", "permission_error",
                        "extra_usage_required")
    if api_status in (401, 403) or any(h in lowered for h in _LOGIN_HINTS):
        return APIError(503, f"{NOT_LOGGED_IN} (CLI said: {shown})", "server_error",
                        "cli_not_logged_in")
    if api_status in _INVALID_STATUSES or api_type in _INVALID_TYPES:
        return refused_request(text, api_status)
    usage = resets_at is not None or any(h in lowered for h in _USAGE_HINTS)
    if api_status == 429 or usage or any(h in lowered for h in _LIMIT_HINTS):
        when = ""
        if resets_at is not None:
            when = f" It resets at {datetime.fromtimestamp(resets_at, timezone.utc):%Y-%m-%d %H:%M} UTC."
        if resets_at is not None:
            wait = max(1, resets_at - int(now))
        elif usage:
            wait = None  # hours or days away, and unknown: no number is better than a wrong one
        else:
            wait = retry_after or RATE_LIMIT_RETRY_AFTER
        return APIError(
            429,
            f"Claude {'usage' if usage else 'rate'} limit reached.{when} (CLI said: {shown})",
            "rate_limit_error",
            USAGE_LIMIT if usage else "rate_limit_exceeded",
            retry_after=wait, resets_at=resets_at,
        )
    if api_status in (503, 529) or any(h in lowered for h in _OVERLOAD_HINTS):
        return APIError(503, f"Claude is overloaded; try again shortly. (CLI said: {shown})",
                        "server_error", "upstream_overloaded", retry_after=OVERLOAD_RETRY_AFTER)
    if api_status is not None and api_status >= 500:
        return APIError(502, f"The Claude API failed with a server error ({api_status}); "
                             f"try again shortly. (CLI said: {shown})", "server_error",
                        "upstream_error")
    if "issue with the selected model" in lowered:
        return APIError(404, f"The Claude API does not know this model. (CLI said: {shown})",
                        "invalid_request_error", "model_not_found", "model")
    if "connection refused" in lowered or "unable to connect" in lowered:
        return APIError(502, f"The CLI could not reach the Claude API. (CLI said: {shown})",
                        "server_error", "upstream_unreachable")
    return APIError(502, f"The Claude Code CLI failed: {shown}", "server_error", "cli_error")


def classify_exit(exit_code: int | None, signal: int | None, stderr: str, now: float) -> APIError:
    """
    The CLI ended without a result line: say why, as far as its stderr tells.
    """
    if exit_code == 127 and stderr.startswith(CANNOT_RUN):
        path, _, why = stderr[len(CANNOT_RUN):].strip().rpartition(": ")
        return cli_unavailable(path, why)
    if stderr.strip():
        found = classify_cli_error(stderr, None, now)
        if found.code != "cli_error":
            return found
    how = f"signal {signal}" if signal is not None else f"exit code {exit_code}"
    detail = f": {excerpt(stderr)}" if stderr.strip() else ""
    return APIError(502, f"The Claude Code CLI ended without an answer ({how}){detail}",
                    "server_error", "cli_error")


# What the exec wrapper (cli_lifetime.py) says on stderr when the CLI cannot be run at all.
CANNOT_RUN = "claude-proxy: cannot run"


def timeout_error(kind: str, seconds: float) -> APIError:
    what = "produced no output" if kind == "idle" else "did not finish"
    return APIError(504, f"The Claude Code CLI {what} within {seconds:g} s.", "server_error",
                    f"cli_{kind}_timeout")


def queue_full(retry_after: int) -> APIError:
    return APIError(429, "Too many requests are waiting for the Claude Code CLI; retry shortly.",
                    "rate_limit_error", "queue_full", retry_after=retry_after)


def cli_unavailable(path: str, why: str) -> APIError:
    return APIError(503, f"The Claude Code CLI at {path} cannot run: {why}", "server_error",
                    "cli_unavailable")
