"""The metrics registry: what is counted, how model labels stay bounded, what is read at scrape time."""

from attrs import define
from prometheus_client.parser import text_string_to_metric_families

from claude_proxy.accounts import Account, Accounts
from claude_proxy.events import RateLimit, Window
from claude_proxy.live_sessions import SessionsSnapshot
from claude_proxy.metrics import MAX_MODEL_LABELS, Metrics
from claude_proxy.pool import PoolSnapshot
from claude_proxy.runner import RunnerSnapshot


@define
class Runner:
    """A runner whose snapshot the test sets."""

    load: RunnerSnapshot = RunnerSnapshot(0, 0, 4, None, None)

    def snapshot(self) -> RunnerSnapshot:
        return self.load


def samples(metrics: Metrics) -> dict:
    """{(sample name, sorted labels): value} of one scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples}


def value(metrics: Metrics, name: str, **labels) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_requests_their_duration_tokens_and_failures_are_counted():
    metrics = Metrics(Runner())
    metrics.request_done("chat_completions", "claude-haiku-4", 200, 0.3)
    metrics.request_done("chat_completions", "claude-haiku-4", 200, 0.7)
    metrics.request_done("messages", "claude-haiku-4", 503, 0.01)
    metrics.answered("claude-haiku-4", 0.2, prompt=11, completion=7)
    metrics.answered("claude-haiku-4", None, prompt=1, completion=2)  # no first token: not observed
    metrics.failed("cli_error")
    assert value(metrics, "claude_proxy_requests_total", endpoint="chat_completions",
                 model="claude-haiku-4", status="200") == 2
    assert value(metrics, "claude_proxy_requests_total", endpoint="messages",
                 model="claude-haiku-4", status="503") == 1
    assert value(metrics, "claude_proxy_request_duration_seconds_count",
                 endpoint="chat_completions") == 2
    assert value(metrics, "claude_proxy_request_duration_seconds_sum",
                 endpoint="chat_completions") == 1.0
    assert value(metrics, "claude_proxy_request_duration_seconds_bucket",
                 endpoint="chat_completions", le="0.5") == 1
    assert value(metrics, "claude_proxy_time_to_first_token_seconds_count",
                 model="claude-haiku-4") == 1
    assert value(metrics, "claude_proxy_tokens_total", model="claude-haiku-4",
                 direction="prompt") == 12
    assert value(metrics, "claude_proxy_tokens_total", model="claude-haiku-4",
                 direction="completion") == 9
    assert value(metrics, "claude_proxy_cli_failures_total", kind="cli_error") == 1


def test_models_past_the_label_limit_are_counted_as_other():
    metrics = Metrics(Runner())
    for i in range(MAX_MODEL_LABELS + 3):
        metrics.request_done("chat_completions", f"claude-model-{i}", 200, 0.1)
    metrics.request_done("chat_completions", "claude-model-0", 200, 0.1)  # known: its own label
    models = {dict(labels)["model"]: v for (name, labels), v in samples(metrics).items()
              if name == "claude_proxy_requests_total"}
    assert len(models) == MAX_MODEL_LABELS + 1
    assert models["other"] == 3 and models["claude-model-0"] == 2


def test_gauges_read_the_runner_when_scraped():
    runner = Runner()
    metrics = Metrics(runner)
    assert value(metrics, "claude_proxy_warm_processes") == 0  # no pool, no sessions
    assert value(metrics, "claude_proxy_live_sessions") == 0
    runner.load = RunnerSnapshot(
        3, 5, 4, PoolSnapshot(size=1, waiting=1, ready=1, hits=0, misses=0),
        SessionsSnapshot(size=3, ttl=600.0, live=2, waiting_for_tools=1, continued=4,
                         fallbacks={"changed": 1}, ended={"ttl": 2}))
    assert value(metrics, "claude_proxy_cli_processes") == 3
    assert value(metrics, "claude_proxy_queue_depth") == 5
    assert value(metrics, "claude_proxy_warm_processes") == 1
    assert value(metrics, "claude_proxy_live_sessions") == 2
    assert value(metrics, "claude_proxy_live_sessions_waiting_for_tools") == 1
    assert value(metrics, "claude_proxy_session_continuations_total") == 4
    assert value(metrics, "claude_proxy_session_fallbacks_total", reason="changed") == 1
    assert value(metrics, "claude_proxy_sessions_ended_total", reason="ttl") == 2


def test_each_accounts_quota_as_last_reported():
    work, home = Account("work", "/w"), Account("home", "/h")
    accounts = Accounts((work, home))
    metrics = Metrics(Runner(), accounts)
    assert value(metrics, "claude_proxy_quota_seen_at_seconds", account="work") is None
    accounts.observed(work, RateLimit("allowed", 2000, "five_hour", using_overage=True,
                                      windows=(Window("five_hour", 0.25, 2000, "allowed"),)),
                      now=1000.0)
    assert value(metrics, "claude_proxy_quota_utilization", account="work",
                 window="five_hour") == 0.25
    assert value(metrics, "claude_proxy_quota_resets_at_seconds", account="work",
                 window="five_hour") == 2000
    assert value(metrics, "claude_proxy_quota_seen_at_seconds", account="work") == 1000
    assert value(metrics, "claude_proxy_extra_usage_in_use", account="work") == 1
    # Extra usage is refused by default: the account is skipped; the other one is not.
    assert value(metrics, "claude_proxy_account_skipped", account="work") == 1
    assert value(metrics, "claude_proxy_account_skipped", account="home") == 0
    assert value(metrics, "claude_proxy_quota_seen_at_seconds", account="home") is None


def test_two_daemons_in_one_process_keep_their_own_registry():
    first, second = Metrics(Runner()), Metrics(Runner())
    first.failed("cli_error")
    assert value(first, "claude_proxy_cli_failures_total", kind="cli_error") == 1
    assert value(second, "claude_proxy_cli_failures_total", kind="cli_error") is None
