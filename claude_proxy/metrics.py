"""
Prometheus metrics for GET /metrics: one registry per daemon (not the
library's global one, so tests and several daemons in one process stay apart).
"""

from __future__ import annotations

from typing import Any, Protocol

from attrs import define, field
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from claude_proxy.accounts import Accounts
from claude_proxy.runner import RunnerSnapshot

# Seconds: a cold CLI answers in ~0.5 s; agents' turns run to minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Full claude-... ids come from requests: past this many distinct ones, "other" (bounded series).
MAX_MODEL_LABELS = 32


@define
class Metrics:
    runner: LoadSource  # its snapshot is read at scrape time
    accounts: Accounts = field(factory=Accounts)  # quota, read at scrape time
    registry: CollectorRegistry = field(factory=CollectorRegistry)
    requests: Counter = field(init=False)
    duration: Histogram = field(init=False)
    first_token: Histogram = field(init=False)
    tokens: Counter = field(init=False)
    failures: Counter = field(init=False)
    refusals: Counter = field(init=False)
    _models: set = field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("claude_proxy_requests", "HTTP requests answered.",
                                ["endpoint", "model", "status"], registry=r)
        self.duration = Histogram("claude_proxy_request_duration_seconds",
                                  "Time from request to the end of the response.",
                                  ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("claude_proxy_time_to_first_token_seconds",
                                     "Time from request to the first content, reasoning or tool call.",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("claude_proxy_tokens", "Tokens in and out, as the API counted them.",
                              ["model", "direction"], registry=r)
        self.failures = Counter("claude_proxy_cli_failures", "CLI runs that failed, by kind.",
                                ["kind"], registry=r)
        self.refusals = Counter("claude_proxy_refusals", "Requests refused before any CLI ran "
                                "(queue full, a key's limit, no account left, shutting down), "
                                "by kind.", ["kind"], registry=r)
        r.register(_Load(self.runner))
        r.register(_Quota(self.accounts))

    def _model(self, model: str) -> str:
        if model not in self._models and len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
        return model if model in self._models else "other"

    def request_done(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, self._model(model), str(status)).inc()
        self.duration.labels(endpoint).observe(seconds)

    def answered(self, model: str, first_token: float | None, prompt: int, completion: int) -> None:
        model = self._model(model)
        if first_token is not None:
            self.first_token.labels(model).observe(first_token)
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "completion").inc(completion)

    def failed(self, kind: str) -> None:
        self.failures.labels(kind).inc()

    def refused(self, kind: str) -> None:
        self.refusals.labels(kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LoadSource(Protocol):
    """What the load's metrics read (the Runner)."""

    def snapshot(self) -> RunnerSnapshot: ...


@define(eq=False)  # hashable: the registry keeps collectors in a dict
class _Load:
    """
    The processes, the queue, the warm pool and the live sessions, from one
    snapshot of the runner's per scrape (a collector: read at scrape time).
    """

    runner: LoadSource

    def collect(self) -> Any:
        load = self.runner.snapshot()
        warm, sessions = load.warm, load.sessions

        continued = CounterMetricFamily(
            "claude_proxy_session_continuations", "Requests that continued a live CLI session.",
            value=sessions.continued if sessions else 0)
        fallbacks = CounterMetricFamily(
            "claude_proxy_session_fallbacks", "Requests with history that started a CLI and "
            "replayed it instead, by why.", labels=["reason"])
        ended = CounterMetricFamily("claude_proxy_sessions_ended",
                                    "Live sessions let go, by why.", labels=["reason"])
        for why, count in (sessions.fallbacks.items() if sessions else ()):
            fallbacks.add_metric([why], count)
        for why, count in (sessions.ended.items() if sessions else ()):
            ended.add_metric([why], count)
        return [
            GaugeMetricFamily("claude_proxy_cli_processes", "CLI processes running now.",
                              value=load.running),
            GaugeMetricFamily("claude_proxy_queue_depth", "Requests waiting for a free CLI "
                              "process.", value=load.queued),
            GaugeMetricFamily("claude_proxy_warm_processes", "CLI processes started ahead of "
                              "time, waiting.", value=warm.waiting if warm else 0),
            GaugeMetricFamily("claude_proxy_live_sessions", "CLI sessions kept with their "
                              "conversation, waiting for its next request.",
                              value=sessions.live if sessions else 0),
            GaugeMetricFamily("claude_proxy_live_sessions_waiting_for_tools", "Live sessions "
                              "whose turn waits on the client's tool results.",
                              value=sessions.waiting_for_tools if sessions else 0),
            continued, fallbacks, ended,
        ]


@define(eq=False)  # hashable: the registry keeps collectors in a dict
class _Quota:
    """Each account's last reported quota, as gauges (a collector: read at scrape time)."""

    accounts: Accounts

    def collect(self) -> Any:
        utilization = GaugeMetricFamily(
            "claude_proxy_quota_utilization", "Share of a usage window spent (0 to 1), as last "
            "reported.", labels=["account", "window"])
        resets = GaugeMetricFamily("claude_proxy_quota_resets_at_seconds",
                                   "When a usage window resets (unix time).",
                                   labels=["account", "window"])
        seen = GaugeMetricFamily("claude_proxy_quota_seen_at_seconds",
                                 "When the account last reported its quota (unix time).",
                                 labels=["account"])
        overage = GaugeMetricFamily("claude_proxy_extra_usage_in_use",
                                    "1 if the last answer drew on paid extra usage.",
                                    labels=["account"])
        skipped = GaugeMetricFamily("claude_proxy_account_skipped",
                                    "1 while requests skip the account.", labels=["account"])
        for account in self.accounts.accounts:
            standing = self.accounts.standing(account)
            skipped.add_metric([account.name], 0 if standing.skipped_until is None else 1)
            if standing.quota is None:
                continue
            report = standing.quota.report
            seen.add_metric([account.name], standing.quota.seen_at)
            overage.add_metric([account.name], 1 if report.using_overage else 0)
            for window in report.windows:
                if window.utilization is not None:
                    utilization.add_metric([account.name, window.name], window.utilization)
                if window.resets_at is not None:
                    resets.add_metric([account.name, window.name], window.resets_at)
        return [utilization, resets, seen, overage, skipped]
