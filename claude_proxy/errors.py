"""
Errors in OpenAI's shape, and the mapping from CLI failures to them.

Everything here is pure: the runner hands over what it saw (a result event, an
exit status, the tail of stderr) and gets back the error the client should see.
"""

from __future__ import annotations

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

# How much of the CLI's own words a client may see: enough to act on, not a dump.
EXCERPT_CHARS = 300

_LOGIN_HINTS = ("not logged in", "/login", "failed to authenticate", "invalid api key",
                "oauth token has expired", "authentication_error")
_USAGE_HINTS = ("hit your",)  # "... (not your usage limit)" is a plain rate limit
_LIMIT_HINTS = ("rate limit", "rate_limit", "request rejected (429)", "limiting requests")
_OVERLOAD_HINTS = ("overloaded", "server-side issue")


def excerpt(text: str) -> str:
    """
    A short, single-line excerpt of CLI output that is safe to show a client.
    """
    flat = " ".join(text.split())
    if len(flat) > EXCERPT_CHARS:
        flat = flat[: EXCERPT_CHARS - 1] + "…"
    return flat


def classify_cli_error(text: str, api_status: int | None, now: float,
                       resets_at: int | None = None) -> APIError:
    """
    Map the text of an error result (and the API status the CLI reports) to the
    error a client should get. `resets_at` is when a rejected subscription
    limit resets (unix seconds), from the CLI's rate_limit_event.
    """
    lowered = text.lower()
    shown = excerpt(text)
    if api_status in (401, 403) or any(h in lowered for h in _LOGIN_HINTS):
        return APIError(503, f"{NOT_LOGGED_IN} (CLI said: {shown})", "server_error",
                        "cli_not_logged_in")
    usage = resets_at is not None or any(h in lowered for h in _USAGE_HINTS)
    if api_status == 429 or usage or any(h in lowered for h in _LIMIT_HINTS):
        when = ""
        if resets_at is not None:
            when = f" It resets at {datetime.fromtimestamp(resets_at, timezone.utc):%Y-%m-%d %H:%M} UTC."
        return APIError(
            429,
            f"Claude {'usage' if usage else 'rate'} limit reached.{when} (CLI said: {shown})",
            "rate_limit_error",
            "usage_limit_reached" if usage else "rate_limit_exceeded",
            retry_after=max(1, resets_at - int(now)) if resets_at is not None else None,
        )
    if api_status in (503, 529) or any(h in lowered for h in _OVERLOAD_HINTS):
        return APIError(503, f"Claude is overloaded; try again shortly. (CLI said: {shown})",
                        "server_error", "upstream_overloaded", retry_after=10)
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
    if stderr.strip():
        found = classify_cli_error(stderr, None, now)
        if found.code != "cli_error":
            return found
    how = f"signal {signal}" if signal is not None else f"exit code {exit_code}"
    detail = f": {excerpt(stderr)}" if stderr.strip() else ""
    return APIError(502, f"The Claude Code CLI ended without an answer ({how}){detail}",
                    "server_error", "cli_error")


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
