"""The observer: every metric of a request, read from its record once, when it ends."""

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from claude_proxy.door import Labels, Route
from claude_proxy.errors import APIError, queue_full
from claude_proxy.events import Usage
from claude_proxy.exchange import INVALID, REFUSED, RUN_FAILED
from claude_proxy.history import History
from claude_proxy.metrics import Metrics
from claude_proxy.observer import RequestObserver
from claude_proxy.runner import RunnerSnapshot

from tests.test_metrics import value

LABELS = Labels((Route("/v1/messages", ("POST",), "messages", lambda request: None,
                       api="Messages"),))
NOT_LOGGED_IN = APIError(503, "Not logged in.", "server_error", "cli_not_logged_in")


@define
class Idle:
    def snapshot(self) -> RunnerSnapshot:
        return RunnerSnapshot(0, 0, 4, None, None)


@define
class FakeRequest:
    path: bytes = b"/v1/messages"
    method: bytes = b"POST"
    code: int = 200
    finished: Deferred = field(factory=Deferred)

    def notifyFinish(self) -> Deferred:
        return self.finished

    def getHeader(self, name: bytes) -> bytes | None:
        return b"claude-cli/2.1.330" if name == b"user-agent" else None


def observed(clock=None):
    clock = clock or Clock()
    metrics, history = Metrics(Idle()), History()
    return RequestObserver(metrics, clock, LABELS, history), metrics, history


def test_nothing_is_counted_before_the_request_ends_then_everything_once():
    clock = Clock()
    observer, metrics, history = observed(clock)
    request = FakeRequest()
    exchange = observer.begin(request)
    exchange.model, exchange.first_token = "claude-haiku-4", 0.2
    exchange.usage = Usage(input_tokens=11, output_tokens=7)
    clock.advance(1.5)
    assert value(metrics, "claude_proxy_requests_total", endpoint="messages",
                 model="claude-haiku-4", status="200") is None
    request.finished.callback(None)
    assert value(metrics, "claude_proxy_requests_total", endpoint="messages",
                 model="claude-haiku-4", status="200") == 1
    assert value(metrics, "claude_proxy_request_duration_seconds_sum", endpoint="messages") == 1.5
    assert value(metrics, "claude_proxy_tokens_total", model="claude-haiku-4",
                 direction="prompt") == 11
    assert value(metrics, "claude_proxy_time_to_first_token_seconds_count",
                 model="claude-haiku-4") == 1
    [record] = history.recent()
    assert (record.api, record.client, record.tokens_out, record.error) == \
        ("Messages", "Claude Code", 7, None)


def test_a_failed_run_and_a_refusal_are_counted_apart():
    observer, metrics, _ = observed()
    failed, refused, invalid = FakeRequest(code=503), FakeRequest(code=429), FakeRequest(code=400)
    observer.begin(failed).failed(NOT_LOGGED_IN, RUN_FAILED)
    observer.begin(refused).failed(queue_full(retry_after=5), REFUSED)
    observer.begin(invalid).failed(APIError(400, "Bad.", code="invalid_json"), INVALID)
    for request in (failed, refused, invalid):
        request.finished.callback(None)
    assert value(metrics, "claude_proxy_cli_failures_total", kind="cli_not_logged_in") == 1
    assert value(metrics, "claude_proxy_refusals_total", kind="queue_full") == 1
    assert value(metrics, "claude_proxy_cli_failures_total", kind="queue_full") is None
    assert value(metrics, "claude_proxy_refusals_total", kind="invalid_json") is None
    assert value(metrics, "claude_proxy_cli_failures_total", kind="invalid_json") is None


def test_a_failed_run_stays_the_error_recorded_when_it_is_raised_again():
    observer, metrics, _ = observed()
    request = FakeRequest(code=503)
    exchange = observer.begin(request)
    exchange.failed(NOT_LOGGED_IN, RUN_FAILED)
    exchange.failed(NOT_LOGGED_IN, REFUSED)  # the route's error handler sees it next
    request.finished.callback(None)
    assert exchange.error_kind == RUN_FAILED
    assert value(metrics, "claude_proxy_cli_failures_total", kind="cli_not_logged_in") == 1
    assert value(metrics, "claude_proxy_refusals_total", kind="cli_not_logged_in") is None


def test_a_client_gone_first_is_a_499():
    observer, metrics, history = observed()
    request = FakeRequest()
    observer.begin(request).model = "claude-haiku-4"
    request.finished.errback(Failure(ConnectionDone()))
    assert value(metrics, "claude_proxy_requests_total", endpoint="messages",
                 model="claude-haiku-4", status="499") == 1
    assert history.recent()[0].status == 499
