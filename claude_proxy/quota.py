"""
An account's subscription quota as last reported (the CLI's rate_limit_event),
and its forms: the API's own `anthropic-ratelimit-unified-*` headers, and the
JSON of `GET /v1/usage`. Pure.
"""

from __future__ import annotations

from datetime import datetime, timezone

from attrs import frozen

from claude_proxy.events import RateLimit

HEADER = "anthropic-ratelimit-unified-"
# The API's short names of the windows in its headers.
WINDOW_HEADERS = {"five_hour": "5h", "seven_day": "7d", "seven_day_opus": "7d_opus",
                  "seven_day_sonnet": "7d_sonnet"}


@frozen
class Quota:
    report: RateLimit
    seen_at: float  # unix seconds

    def headers(self) -> dict[str, str]:
        """The state as the API's unified rate-limit headers (what Claude Code reads)."""
        report = self.report
        headers = {f"{HEADER}status": report.status}
        if report.resets_at is not None:
            headers[f"{HEADER}reset"] = str(report.resets_at)
        if report.kind:
            headers[f"{HEADER}representative-claim"] = report.kind
        for window in report.windows:
            short = WINDOW_HEADERS.get(window.name, window.name)
            headers[f"{HEADER}{short}-status"] = window.status
            if window.utilization is not None:
                headers[f"{HEADER}{short}-utilization"] = f"{window.utilization:g}"
            if window.resets_at is not None:
                headers[f"{HEADER}{short}-reset"] = str(window.resets_at)
        if report.overage_status:
            headers[f"{HEADER}overage-status"] = report.overage_status
        if report.overage_disabled_reason:
            headers[f"{HEADER}overage-disabled-reason"] = report.overage_disabled_reason
        return headers

    def to_json(self, now: float) -> dict:
        report = self.report
        return {
            "status": report.status,
            "representative_window": report.kind or None,
            "resets_at": _time(report.resets_at),
            "windows": {w.name: {"utilization": w.utilization, "status": w.status,
                                 "resets_at": _time(w.resets_at)} for w in report.windows},
            "extra_usage": {"status": report.overage_status or None,
                            "disabled_reason": report.overage_disabled_reason or None,
                            "in_use": report.using_overage},
            "seen_at": _time(self.seen_at),
            "age_seconds": round(now - self.seen_at, 1),
        }


def _time(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
