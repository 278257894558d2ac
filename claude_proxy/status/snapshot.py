"""
The status page's data (GET /status/data): accounts and their quota, what
runs now, recent requests and the last hour by minute. Pure: built from
values read off the daemon's parts; never a prompt, an answer or a key.
"""

from __future__ import annotations

from collections.abc import Mapping

from claude_proxy.accounts import Accounts
from claude_proxy.cli_probe import Health
from claude_proxy.history import History
from claude_proxy.runner import RunnerSnapshot

# The windows' names as people say them; others are shown as the API names them.
WINDOW_LABELS = {"five_hour": "5-hour", "seven_day": "Weekly", "seven_day_opus": "Weekly (Opus)",
                 "seven_day_sonnet": "Weekly (Sonnet)"}
# The window shown first: the session limit, then the weekly ones.
WINDOW_ORDER = ("five_hour", "seven_day", "seven_day_opus", "seven_day_sonnet")


def _window_key(name: str) -> tuple[int, str]:
    return (WINDOW_ORDER.index(name) if name in WINDOW_ORDER else len(WINDOW_ORDER), name)


def accounts_json(accounts: Accounts, logins: Mapping[str, Health], now: float) -> list[dict]:
    accounts.route("", now)  # lets lapsed skips go
    shown = []
    for account in accounts.accounts:
        standing = accounts.standing(account)
        health = logins.get(account.name)
        quota = None
        if standing.quota is not None:
            report = standing.quota.report
            quota = {
                "status": report.status,
                "seen_at": standing.quota.seen_at,
                "windows": [{"name": w.name, "label": WINDOW_LABELS.get(w.name, w.name),
                             "utilization": w.utilization, "status": w.status,
                             "resets_at": w.resets_at}
                            for w in sorted(report.windows, key=lambda w: _window_key(w.name))],
                "extra_usage": {"status": report.overage_status or None,
                                "in_use": report.using_overage,
                                "disabled_reason": report.overage_disabled_reason or None},
            }
        shown.append({
            "name": account.name,
            "status": health.status if health is not None else None,
            "login": health.login if health is not None else None,
            "skipped": None if standing.skipped_until is None else
            {"why": standing.why, "until": standing.skipped_until},
            "answered": standing.answered,
            "failed_over": standing.failed_over,
            "quota": quota,
        })
    return shown


def load_json(load: RunnerSnapshot) -> dict:
    """What runs now."""
    warm, sessions = load.warm, load.sessions
    return {"running": load.running, "queued": load.queued, "max_concurrent": load.max_concurrent,
            "warm": warm.waiting if warm is not None else 0,
            "live_sessions": sessions.live if sessions is not None else 0,
            "waiting_for_tools": sessions.waiting_for_tools if sessions is not None else 0}


def snapshot(now: float, started: float, version: str, accounts: Accounts,
             logins: Mapping[str, Health], load: RunnerSnapshot, history: History) -> dict:
    return {
        "now": now,
        "version": version,
        "uptime_seconds": round(now - started, 1),
        "overage": "refuse" if accounts.refuse_overage else "allow",
        "accounts": accounts_json(accounts, logins, now),
        "load": load_json(load),
        "recent": [r.to_json() for r in history.recent()],
        "minutes": history.per_minute(now),
    }
