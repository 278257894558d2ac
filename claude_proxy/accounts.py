"""
The subscriptions the daemon serves from, and which one answers a request.

Each account is a Claude config dir where that account is logged in (or, with
none given, the user's default login). A conversation sticks to one account,
so its prompt cache stays warm, and conversations spread across accounts
(rendezvous hashing: sticky, and an account that drops out moves only its
own conversations). An account that is exhausted, not logged in, or drawing
on paid extra usage while `refuse_overage` is on, is skipped until it resets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from attrs import define, field, frozen
from twisted.logger import Logger

from claude_proxy.errors import APIError
from claude_proxy.events import RateLimit
from claude_proxy.quota import Quota
from claude_proxy.request import NeutralRequest

log = Logger()

# How long an account is skipped after a refusal that names no reset time.
SKIP_SECONDS = {"rate_limit": 30.0, "not_logged_in": 60.0, "extra_usage": 300.0,
                "usage_limit": 300.0}
PROXY_ACCOUNT_HEADER = "x-claude-proxy-account"


@frozen
class Account:
    name: str
    config_dir: str | None = None  # None: the user's default login

    def environ(self, environ: Mapping[str, str]) -> Mapping[str, str]:
        """The daemon's environment as the CLI's plan reads it, pointing at this login."""
        if self.config_dir is None:
            return environ
        return {**environ, "CLAUDE_SECURESTORAGE_CONFIG_DIR": self.config_dir}


@define
class Standing:
    """What is known of one account now."""

    quota: Quota | None = None
    skipped_until: float | None = None
    why: str | None = None  # usage_limit, rate_limit, extra_usage, not_logged_in
    answered: int = 0
    failed_over: int = 0
    # Whether its answers come with a quota report (subscription logins do,
    # API keys do not); None until an answer has shown it.
    reports_quota: bool | None = None


def conversation_key(request: NeutralRequest, key_id: str | None) -> str:
    """What stays the same across a conversation's turns: its opening."""
    conversation = request.conversation
    opening = [key_id, conversation.system, list(conversation.messages[0].content)]
    return hashlib.sha256(json.dumps(opening, sort_keys=True).encode()).hexdigest()


@define
class Accounts:
    accounts: tuple[Account, ...] = (Account("default"),)
    refuse_overage: bool = True
    _standing: dict[str, Standing] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._standing = {a.name: Standing() for a in self.accounts}

    def standing(self, account: Account) -> Standing:
        return self._standing[account.name]

    def route(self, key: str, now: float) -> list[Account]:
        """The usable accounts, in the order this conversation tries them."""
        def score(account: Account) -> str:
            return hashlib.sha256(f"{key}\0{account.name}".encode()).hexdigest()

        return [a for a in sorted(self.accounts, key=score, reverse=True) if self._usable(a, now)]

    def _usable(self, account: Account, now: float) -> bool:
        standing = self.standing(account)
        if standing.skipped_until is not None and standing.skipped_until <= now:
            standing.skipped_until = standing.why = None
        return standing.skipped_until is None

    def _skip(self, account: Account, why: str, until: float) -> None:
        standing = self.standing(account)
        standing.skipped_until, standing.why = until, why
        log.info("Account {account} skipped until {until:.0f}: {why}", account=account.name,
                 until=until, why=why)

    def observed(self, account: Account, report: RateLimit, now: float) -> None:
        """The quota an answer reported. The answer itself is delivered whatever it says."""
        standing = self.standing(account)
        standing.quota, standing.reports_quota = Quota(report, now), True
        reset = float(report.resets_at) if report.resets_at is not None else None
        if report.using_overage and self.refuse_overage:
            self._skip(account, "extra_usage", reset or now + SKIP_SECONDS["extra_usage"])
        elif report.status == "rejected" and not report.using_overage and reset is not None:
            # The plan's window is spent: the API would refuse the next request.
            self._skip(account, "usage_limit", reset)

    def answered(self, account: Account, reported: bool | None) -> None:
        """An answer was delivered; `reported`: whether the CLI's whole turn held a quota report."""
        standing = self.standing(account)
        standing.answered += 1
        if reported is not None:
            standing.reports_quota = reported

    def awaits_quota(self, account: Account) -> bool:
        """Whether a CLI whose answer ended early should be given a moment to report the quota."""
        return self.standing(account).reports_quota is not False

    def rejected(self, account: Account, error: APIError, now: float) -> bool:
        """
        An account refused a request before any byte reached the client:
        whether another account may take it (the refusal is the account's).
        """
        why = _refusal(error)
        if why is None:
            return False
        if why != "usage_limit" and len(self.accounts) == 1:
            return False  # nothing to fail over to, and no reset worth waiting for
        wait = error.retry_after if error.retry_after is not None else SKIP_SECONDS[why]
        self._skip(account, why, error.resets_at if error.resets_at is not None else now + wait)
        self.standing(account).failed_over += 1
        return True

    def refusal(self, now: float) -> APIError:
        """The answer when no account is usable: the earliest reset, in the best words."""
        skipped = [(s.skipped_until or now, s.why) for s in self._standing.values()]
        until, why = min(skipped, key=lambda s: s[0])
        retry_after = max(1, round(until - now))
        whose = "The account" if len(self.accounts) == 1 else "Every account"
        if all(w == "not_logged_in" for _, w in skipped):
            return APIError(503, f"{whose} of this proxy is not logged in. Run `claude`, log in "
                                 "with /login, then retry.", "server_error", "cli_not_logged_in")
        if why == "extra_usage" and self.refuse_overage:
            return APIError(429, f"{whose} is drawing on paid extra usage, which this proxy "
                                 f"refuses (--overage refuse); the plan's window resets in "
                                 f"{retry_after} s.", "rate_limit_error", "extra_usage_refused",
                            retry_after=retry_after)
        if why == "rate_limit":
            return APIError(429, f"{whose} is being rate limited by the Claude API; retry in "
                                 f"{retry_after} s.", "rate_limit_error", "rate_limit_exceeded",
                            retry_after=retry_after)
        return APIError(429, f"{whose} has reached its Claude usage limit; the earliest resets "
                             f"in {retry_after} s.", "rate_limit_error", "usage_limit_reached",
                        retry_after=retry_after, resets_at=round(until))

    def headers(self, account: Account) -> dict[str, str]:
        """Response headers: the account's last known quota, and its name."""
        quota = self.standing(account).quota
        headers = quota.headers() if quota is not None else {}
        headers[PROXY_ACCOUNT_HEADER] = account.name
        return headers

    def to_json(self, now: float) -> dict:
        """GET /v1/usage."""
        self.route("", now)  # lets lapsed skips go
        return {"object": "list", "refuse_overage": self.refuse_overage, "data": [
            {"account": a.name, "config_dir": a.config_dir,
             "skipped": None if s.skipped_until is None else {
                 "why": s.why, "until": round(s.skipped_until),
                 "seconds_left": round(s.skipped_until - now)},
             "answered": s.answered, "failed_over": s.failed_over,
             "quota": s.quota.to_json(now) if s.quota is not None else None}
            for a, s in ((a, self.standing(a)) for a in self.accounts)]}


def _refusal(error: APIError) -> str | None:
    """Which of an account's own refusals an error is, if it is one."""
    if error.code == "usage_limit_reached":
        return "usage_limit"
    if error.code in ("rate_limit_exceeded", "extra_usage_required"):
        return "rate_limit" if error.code == "rate_limit_exceeded" else "extra_usage"
    if error.code == "cli_not_logged_in":
        return "not_logged_in"
    return None
