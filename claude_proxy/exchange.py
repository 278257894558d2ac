"""
One request's record: what is known of it, filled in as it is answered, and
read once when it ends (observer.py: the metrics, the access log, the status
page's history). It is a declared attribute of the daemon's own request class
(site.ProxyRequest.exchange). Never a prompt, an answer or a key.
"""

from __future__ import annotations

from attrs import define

from claude_proxy.errors import APIError
from claude_proxy.events import Usage

# Where the error a request got came from: what the observer counts it as.
RUN_FAILED = "run_failed"  # a run of the CLI failed (claude_proxy_cli_failures)
REFUSED = "refused"  # refused before any CLI ran: full, shutting down (claude_proxy_refusals)
INVALID = "invalid"  # the request itself: no key, bad JSON, unknown path (not counted)


@define
class Exchange:
    request_id: str
    started: float  # reactor seconds, when the request reached the daemon's resources
    key_id: str | None = None
    model: str = "-"
    # The answer's usage as the API counted it, once a run reported it.
    usage: Usage | None = None
    account: str | None = None  # the account that answered (or refused last)
    first_token: float | None = None  # seconds after `started`
    error: APIError | None = None  # also one that went out as an event after a 200
    error_kind: str | None = None  # RUN_FAILED, REFUSED or INVALID

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else self.error.code

    def failed(self, error: APIError, kind: str) -> None:
        """The request got this error; a run's failure stays the one recorded."""
        if self.error_kind != RUN_FAILED:
            self.error, self.error_kind = error, kind
