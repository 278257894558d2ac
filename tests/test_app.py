"""
The HTTP API in memory: StubTreq in front, fake CLI processes (replaying real
CLI output) behind, a Clock for time.
"""

import json
import re

import pytest
from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from claude_proxy.admission import LOOPBACK_NAMES, Admission
from claude_proxy.app import ProxyAPI
from claude_proxy.auth import KeyRing
from claude_proxy.cli_probe import Health
from claude_proxy.dispatch import Dispatch
from claude_proxy.metrics import Metrics
from claude_proxy.observer import RequestObserver
from claude_proxy.plan import CLISettings
from claude_proxy.runner import Runner
from claude_proxy.site import ProxySite

from tests.fakes import sample_lines
from tests.site_treq import SiteTreq
from tests.streams import data_events

PARTIAL = sample_lines("cli-2.1.330/stream-json-partial.jsonl")
URL = "http://proxy/v1/chat/completions"


@define
class FakeProbe:
    health: Health

    async def check(self):
        return self.health


class Capture(Resource):
    """Keeps the server-side requests, so a test can drop a connection."""

    isLeaf = True

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        return self.inner.render(request)


def build(reactor, tmp_path, keys=(), origins=(), max_per_key=0, hosts=None):
    runner = Runner(reactor, max_concurrent=1, queue_size=1, kill_grace=5,
                    scratch_root=str(tmp_path))
    probe = FakeProbe(Health(True, "/bin/claude", "2.1.330",
                             login={"logged_in": True, "method": "claude.ai", "subscription": "max"}))
    metrics = Metrics(runner)
    dispatch = Dispatch(runner, CLISettings("/bin/claude"), {"PATH": "/bin"}, reactor,
                        max_per_key=max_per_key)
    api = ProxyAPI(dispatch, probe, metrics)
    capture = Capture(Admission(api.resource(), KeyRing(tuple(keys)), api.doors,
                                frozenset(origins), hosts))
    observer = RequestObserver(metrics, reactor, api.labels, api.history)
    # The HTTP connections' own timers run on a clock of their own (as under StubTreq).
    site = ProxySite(capture, observer, api.doors, 1 << 20, reactor=MemoryReactorClock())
    return api, capture, SiteTreq(site)


@pytest.fixture
def proxy(reactor, tmp_path):
    return build(reactor, tmp_path)


def answered(d: Deferred) -> bool:
    out = []
    d.addBoth(lambda r: out.append(r) or r)
    return bool(out)


def result(d: Deferred):
    out = []
    d.addBoth(out.append)
    assert out, "no answer yet"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def body(model="claude-haiku-4", **over):
    payload = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    payload.update(over)
    return payload


def answer(treq, reactor, d, lines=PARTIAL, code=0):
    treq.flush()
    reactor.spawned[-1].emit(*lines)
    reactor.spawned[-1].exit(code)
    treq.flush()
    response = result(d)
    content = treq.content(response)
    treq.flush()
    return response, result(content)


def test_health_and_models(proxy):
    api, _, treq = proxy
    response = result(treq.get("http://proxy/health"))
    assert response.code == 200
    health = json.loads(result(treq.content(response)))
    assert health["cli"] == {"path": "/bin/claude", "version": "2.1.330", "error": None}
    assert (health["in_flight"], health["queued"]) == (0, 0)
    assert health["login"] == {"logged_in": True, "method": "claude.ai", "subscription": "max"}
    assert health["uptime_seconds"] == 0
    assert len(response.headers.getRawHeaders("x-request-id")[0]) == 32

    api.probe.health = Health(False, "/bin/claude", None, "No such file")
    assert result(treq.get("http://proxy/health")).code == 503

    models = json.loads(result(treq.content(result(treq.get("http://proxy/v1/models")))))
    assert [m["id"] for m in models["data"]] == ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"]
    one = result(treq.get("http://proxy/v1/models/openai/claude-opus-4"))
    assert one.code == 200
    assert json.loads(result(treq.content(one)))["id"] == "claude-opus-4"
    missing = result(treq.get("http://proxy/v1/models/gpt-4"))
    assert missing.code == 404
    assert json.loads(result(treq.content(missing)))["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path", ["/", "/api/hello"])
def test_claude_codes_probes_are_answered(proxy, path):
    _, _, treq = proxy
    assert result(treq.head("http://proxy" + path)).code == 200


@pytest.mark.parametrize("method, path, status", [
    ("get", "/nowhere", 404), ("get", "/v1/chat/completions", 405),
    ("post", "/v1/models", 405), ("delete", "/health", 405),
])
def test_routing_errors_are_openai_shaped(proxy, method, path, status):
    _, _, treq = proxy
    response = result(getattr(treq, method)("http://proxy" + path))
    assert response.code == status
    error = json.loads(result(treq.content(response)))["error"]
    assert set(error) == {"message", "type", "param", "code"}


def test_malformed_and_invalid_bodies(proxy, reactor):
    _, _, treq = proxy
    response = result(treq.post(URL, data=b"{nope"))
    assert response.code == 400
    assert json.loads(result(treq.content(response)))["error"]["code"] == "invalid_json"
    response = result(treq.post(URL, json=body(messages=[])))
    assert response.code == 400
    assert json.loads(result(treq.content(response)))["error"]["param"] == "messages"
    response = result(treq.post(URL, json=body(model="gpt-4o")))
    assert response.code == 404
    assert reactor.spawned == []


def test_non_streaming_completion(proxy, reactor):
    _, _, treq = proxy
    d = treq.post(URL, json=body(model="openai/claude-haiku-4"))
    response, raw = answer(treq, reactor, d)
    assert response.code == 200
    completion = json.loads(raw)
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "claude-haiku-4"
    assert completion["id"].startswith("chatcmpl-")
    assert completion["choices"][0]["message"]["content"] == "MOCK REPLY to: hello"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 7
    assert reactor.spawned[0].args[reactor.spawned[0].args.index("--model") + 1] == "haiku"


def test_streaming_with_usage(proxy, reactor):
    _, _, treq = proxy
    d = treq.post(URL, json=body(stream=True, stream_options={"include_usage": True}))
    response, raw = answer(treq, reactor, d)
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    events = data_events(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert {c["model"] for c in chunks} == {"claude-haiku-4"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert texts == ["MOCK RE", "PLY to:", " hello"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7


def test_streaming_without_usage_chunk(proxy, reactor):
    _, _, treq = proxy
    _, raw = answer(treq, reactor, treq.post(URL, json=body(stream=True)))
    assert all("usage" not in c for c in data_events(raw)[:-1])


def test_stream_takes_the_result_text_when_deltas_fell_short(proxy, reactor):
    _, _, treq = proxy
    _, raw = answer(treq, reactor, treq.post(URL, json=body(stream=True)),
                    sample_lines("cli-2.1.330/midstream-error-fallback.jsonl"))
    # The deltas said "partial "; the retried answer is authoritative but cannot
    # replace text already sent, so only what extends it is added.
    texts = [c["choices"][0]["delta"].get("content") for c in data_events(raw)[1:-2]]
    assert texts == ["partial "]


def test_error_before_any_output_is_an_http_status_even_when_streaming(proxy, reactor):
    _, _, treq = proxy
    d = treq.post(URL, json=body(stream=True))
    response, raw = answer(treq, reactor, d, sample_lines("cli-2.1.330/error-401-default-retries.jsonl"), 1)
    assert response.code == 503
    assert json.loads(raw)["error"]["code"] == "cli_not_logged_in"


def test_error_after_the_stream_started_is_an_sse_error_then_done(proxy, reactor):
    _, _, treq = proxy
    d = treq.post(URL, json=body(stream=True))
    treq.flush()
    process = reactor.spawned[0]
    process.emit(*PARTIAL[:4])  # up to the first text delta
    process.protocol.errReceived(b"fatal: out of memory\n")
    process.exit(1)
    treq.flush()
    response = result(d)
    raw = result(treq.content(response))
    assert response.code == 200
    events = data_events(raw)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "cli_error"
    assert "out of memory" in events[-2]["error"]["message"]


def test_non_streaming_cli_failure_is_typed_and_the_server_survives(proxy, reactor):
    _, _, treq = proxy
    response, raw = answer(treq, reactor, treq.post(URL, json=body()),
                           sample_lines("cli-2.1.330/error-529-no-retries.jsonl"), 1)
    assert response.code == 503
    assert response.headers.getRawHeaders("retry-after") == ["10"]
    assert json.loads(raw)["error"]["code"] == "upstream_overloaded"
    response, _ = answer(treq, reactor, treq.post(URL, json=body()))
    assert response.code == 200


def test_headers_go_out_when_the_api_answers_or_after_the_hold(proxy, reactor):
    _, _, treq = proxy
    d = treq.post(URL, json=body(stream=True))
    treq.flush()
    assert not answered(d)
    reactor.advance(10)
    treq.flush()
    response = result(d)
    assert response.code == 200
    reactor.advance(15)
    treq.flush()
    reactor.spawned[0].emit(*PARTIAL)
    reactor.spawned[0].exit(0)
    treq.flush()
    raw = result(treq.content(response))
    assert b": keep-alive\n\n" in raw
    assert data_events(raw)[-1] == "[DONE]"
    assert reactor.getDelayedCalls() == []


def test_queue_full_is_429_with_retry_after(proxy, reactor):
    _, _, treq = proxy
    first = treq.post(URL, json=body())
    second = treq.post(URL, json=body())
    third = treq.post(URL, json=body())
    treq.flush()
    response = result(third)
    assert response.code == 429
    assert response.headers.getRawHeaders("retry-after") == ["5"]
    assert json.loads(result(treq.content(response)))["error"]["code"] == "queue_full"
    assert not answered(first) and not answered(second)


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_terminates_the_cli(proxy, reactor, stream):
    _, capture, treq = proxy
    treq.post(URL, json=body(stream=stream))
    treq.flush()
    process = reactor.spawned[0]
    if stream:
        process.emit(*PARTIAL[:4])
        treq.flush()
    capture.requests[0].connectionLost(Failure(ConnectionDone()))
    assert process.signals == ["TERM"]
    reactor.advance(5)
    assert process.signals == ["TERM", "KILL"]
    process.exit(signal=9)
    assert reactor.getDelayedCalls() == []


def test_a_slow_client_pauses_reading_the_cli(proxy, reactor):
    _, capture, treq = proxy
    treq.post(URL, json=body(stream=True))
    treq.flush()
    process = reactor.spawned[0]
    process.emit(*PARTIAL[:4])
    treq.flush()
    channel = capture.requests[0].channel
    # What the HTTP channel does when its transport's buffer fills, then drains.
    channel.pauseProducing()
    assert process.paused
    channel.resumeProducing()
    assert not process.paused


# -- the gate: keys, origins, request ids, metrics


def post(treq, headers=None, **over):
    return result(treq.post(URL, json=body(**over), headers=headers or {}))


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"authorization": "Bearer wrong"}, 401),
    ({"authorization": "Basic c2stb25l"}, 401),
    ({"x-api-key": "sk-two "}, 200),
    ({"authorization": "Bearer sk-one"}, 200),
    ({"authorization": "bearer  sk-one"}, 200),
])
def test_api_keys(reactor, tmp_path, headers, status):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one", "sk-two"))
    d = treq.post(URL, json=body(), headers=headers)
    if status == 200:
        response = answer(treq, reactor, d)[0]
    else:
        response = result(d)
        error = json.loads(result(treq.content(response)))["error"]
        assert error["code"] == "invalid_api_key"
        assert response.headers.getRawHeaders("www-authenticate")
        assert reactor.spawned == []  # refused before any CLI ran
    assert response.code == status


def test_health_stays_open_and_models_need_the_key(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one",))
    assert result(treq.get("http://proxy/health")).code == 200
    assert result(treq.get("http://proxy/v1/models")).code == 401
    assert result(treq.get("http://proxy/metrics")).code == 401


def test_cross_origin_requests_are_refused_before_any_cli_runs(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, origins=("http://localhost:5173",))
    response = post(treq, {"origin": "https://evil.example"})
    assert response.code == 403
    assert json.loads(result(treq.content(response)))["error"]["code"] == "origin_not_allowed"
    assert reactor.spawned == []
    assert not response.headers.hasHeader("access-control-allow-origin")


def test_allowed_origins_get_cors_headers_and_preflight(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one",), origins=("http://localhost:5173",))
    origin = {"origin": "http://localhost:5173"}
    preflight = result(treq.request("OPTIONS", URL, headers={
        **origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"}))
    assert preflight.code == 204  # no key needed for a preflight
    assert preflight.headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:5173"]
    assert "POST" in preflight.headers.getRawHeaders("access-control-allow-methods")[0]
    response = answer(treq, reactor, treq.post(
        URL, json=body(), headers={**origin, "authorization": "Bearer sk-one"}))[0]
    assert response.code == 200
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:5173"]


def test_per_key_concurrency(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one", "sk-two"), max_per_key=1)
    first = treq.post(URL, json=body(), headers={"x-api-key": "sk-one"})
    treq.flush()
    second = post(treq, {"x-api-key": "sk-one"})
    assert second.code == 429
    assert json.loads(result(treq.content(second)))["error"]["code"] == "key_concurrency_limit"
    other = treq.post(URL, json=body(), headers={"x-api-key": "sk-two"})
    treq.flush()
    assert len(reactor.spawned) == 1  # sk-two waits in the queue, not refused
    reactor.spawned[0].emit(*PARTIAL)
    reactor.spawned[0].exit(0)
    treq.flush()
    assert result(first).code == 200
    reactor.spawned[1].emit(*PARTIAL)
    reactor.spawned[1].exit(0)
    treq.flush()
    assert result(other).code == 200
    assert answer(treq, reactor, treq.post(URL, json=body(), headers={"x-api-key": "sk-one"}))[0].code == 200


def test_metrics_count_requests_tokens_and_failures(proxy, reactor):
    _, _, treq = proxy
    answer(treq, reactor, treq.post(URL, json=body()))
    d = treq.post(URL, json=body())
    treq.flush()
    reactor.spawned[-1].emit(*sample_lines("cli-2.1.330/error-401-default-retries.jsonl"))
    reactor.spawned[-1].exit(1)
    treq.flush()
    assert result(d).code == 503
    response = result(treq.get("http://proxy/metrics"))
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = result(treq.content(response)).decode()
    assert 'claude_proxy_requests_total{endpoint="chat_completions",model="claude-haiku-4",status="200"} 1.0' in text
    assert 'claude_proxy_requests_total{endpoint="chat_completions",model="claude-haiku-4",status="503"} 1.0' in text
    assert 'claude_proxy_tokens_total{direction="completion",model="claude-haiku-4"} 7.0' in text
    assert 'claude_proxy_cli_failures_total{kind="cli_not_logged_in"} 1.0' in text
    assert "claude_proxy_time_to_first_token_seconds_count" in text
    assert "claude_proxy_cli_processes 0.0" in text  # both runs have ended
    assert "claude_proxy_queue_depth 0.0" in text


@pytest.mark.parametrize("host, status", [
    ("localhost:3456", 200), ("127.0.0.1:3456", 200), ("[::1]:3456", 200), ("LOCALHOST", 200),
    ("attacker.example:3456", 403), ("127.0.0.1.nip.io", 403),
])
def test_without_keys_only_loopback_host_names_are_answered(reactor, tmp_path, host, status):
    # A page that re-points its own name at 127.0.0.1 (DNS rebinding) sends its own Host.
    _, _, treq = build(reactor, tmp_path, hosts=LOOPBACK_NAMES)
    response = result(treq.get("http://proxy/v1/models", headers={"host": host}))
    assert response.code == status
    if status == 403:
        assert json.loads(result(treq.content(response)))["error"]["code"] == "host_not_allowed"


def test_refusals_before_any_run_are_counted_and_model_labels_are_bounded(proxy, reactor):
    api, _, treq = proxy
    treq.post(URL, json=body())  # runs
    treq.post(URL, json=body())  # waits in the queue (size 1)
    treq.flush()
    assert post(treq).code == 429  # queue full
    text = result(treq.content(result(treq.get("http://proxy/metrics")))).decode()
    # Counted apart from the runs of the CLI that failed: none ran.
    assert 'claude_proxy_refusals_total{kind="queue_full"} 1.0' in text
    assert "claude_proxy_cli_failures_total{" not in text
    for i in range(40):
        api.metrics.request_done("chat_completions", f"claude-x{i}", 404, 0.0)
    text = result(treq.content(result(treq.get("http://proxy/metrics")))).decode()
    assert len(set(re.findall(r'model="([^"]+)"', text)) - {"other"}) == 32
    assert 'model="other"' in text


def test_the_status_page_is_open_and_its_data_needs_the_key(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one",))
    page = result(treq.get("http://proxy/"))
    assert page.code == 200
    assert page.headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert "script-src 'self'" in page.headers.getRawHeaders("content-security-policy")[0]
    assert b"/status/page.js" in result(treq.content(page))
    assert result(treq.head("http://proxy/")).code == 200
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        asset = result(treq.get(f"http://proxy/status/{name}"))
        assert asset.code == 200
        assert asset.headers.getRawHeaders("content-type")[0].startswith(kind)
    assert result(treq.get("http://proxy/status/data")).code == 401
    assert result(treq.get("http://proxy/status/other.js")).code == 401  # not the page's


def test_the_status_data_shows_requests_but_no_prompt_or_key(reactor, tmp_path):
    _, _, treq = build(reactor, tmp_path, keys=("sk-one",))
    headers = {"authorization": "Bearer sk-one", "user-agent": "OpenAI/Python 1.99"}
    response, _ = answer(treq, reactor, treq.post(URL, json=body(), headers=headers))
    assert response.code == 200
    data_response = result(treq.get("http://proxy/status/data", headers=headers))
    assert data_response.code == 200
    assert data_response.headers.getRawHeaders("cache-control") == ["no-store"]
    raw = result(treq.content(data_response))
    assert b"hello" not in raw and b"sk-one" not in raw
    data = json.loads(raw)
    [record] = data["recent"]
    assert (record["api"], record["client"], record["status"], record["account"]) == \
        ("Chat", "openai (Python)", 200, "default")
    assert record["tokens_out"] > 0 and record["first_token"] is not None
    assert data["minutes"][-1]["requests"] == 1
    assert data["load"] == {"running": 0, "queued": 0, "max_concurrent": 1, "warm": 0,
                            "live_sessions": 0, "waiting_for_tools": 0}
    [account] = data["accounts"]
    assert (account["name"], account["status"], account["skipped"]) == ("default", "ok", None)
    assert data["overage"] == "refuse"


def test_each_front_door_has_its_own_endpoint_label(proxy):
    api, _, _ = proxy
    assert [api.labels.endpoint_of(p) for p in (
        b"/v1/chat/completions", b"/v1/responses", b"/v1/responses/resp_1", b"/v1/messages",
        b"/v1/messages/count_tokens", b"/v1/usage", b"/v1/nope")] == [
        "chat_completions", "responses", "response", "messages", "count_tokens", "usage", "other"]
    # Only the wire APIs' requests go into the status page's history.
    assert [api.labels.api_of(p) for p in (
        b"/v1/chat/completions", b"/v1/responses", b"/v1/messages", b"/v1/responses/resp_1",
        b"/health", b"/status/data")] == ["Chat", "Responses", "Messages", None, None, None]
