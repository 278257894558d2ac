"""
Thousands of generated bad and odd requests against a real daemon (twistd in
its own process, the fake CLI replaying real CLI output): never a 500, never a
connection closed without an answer, every error a JSON body in the shape of
the path's API; afterwards no slot held and no CLI process left.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.daemons import settled, start_twistd, wait_for

EXAMPLES = 3000
# The wire APIs' paths: a new front door adds its path here.
API_PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/models",
             "/v1/models/claude-opus-4", "/health", "/metrics"]
ODD_PATHS = ["//v1//models", "//v1//chat//completions", "/v1/models/%c3%28", "/v1/models/%00",
             "/v1/models/..%2f..%2fetc", "/", "/v1", "/v1/chat/completions/", "/v1/chat/completions?x=%ff",
             "/%", "/v1/messages/%ff", "*", "/v1/models/" + "a" * 3000]
METHODS = ["POST", "POST", "POST", "GET", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8",
                 "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                 "text/plain", "application/json; charset=latin-1", "\x7f/\x7f"]
FIELDS = ["model", "messages", "stream", "max_tokens", "max_completion_tokens", "temperature",
          "top_p", "tools", "tool_choice", "response_format", "stop", "stream_options",
          "reasoning_effort", "n", "user", "system", "input", "instructions", "metadata"]
VALID = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "hi"}]}

scalars = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
           | st.floats(allow_nan=False) | st.text(max_size=12)
           | st.sampled_from(["", "\x00", "\ud800", "claude-opus-4", "user", "system",
                              "assistant", "tool", "a" * 70000, "[[fake:sample x]]"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["role", "content", "type", "text",
                                                         "name", "id", "x"]) | st.text(max_size=5),
                                        inner, max_size=3), max_leaves=10)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "x"]) | values},
    optional={"content": values, "tool_calls": values, "tool_call_id": values, "name": values}),
    max_size=4)


def encode(obj: object) -> bytes:
    # ensure_ascii keeps lone surrogates as \ud800 escapes: valid JSON, invalid text.
    return json.dumps(obj).encode("ascii")


bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=4).map(
        lambda changes: encode({**VALID, **changes})),
    messages.map(lambda m: encode({**VALID, "messages": m})),
    values.map(encode),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=64),
    st.sampled_from([
        b"", b"{", b"null", b"1e400", b'{"model":"claude-haiku-4","messages":[{"role":"system",'
        b'"content":"\\ud800"},{"role":"user","content":"x"}]}',
        b'{"model":"claude-haiku-4","messages":[{"role":"user","content":"\\udfff\\u0000"}]}',
        b'{"model":"claude-haiku-4","messages":[{"role":"user","content":"a\xff\xfe"}]}',
        b'\xef\xbb\xbf{"model":"claude-haiku-4","messages":[]}',
        encode({**VALID, "stream": True}), encode(VALID),
        encode({**VALID, "messages": [{"role": "system", "content": "s" * 200000},
                                      {"role": "user", "content": "x"}]}),
    ]),
)
# Requests that never arrive whole wait for the read deadline (--read-timeout): rare.
incomplete = st.sampled_from([{"content-length": "-1"}, {"transfer-encoding": "chunked"},
                              {"expect": "100-continue"}])
extra_headers = st.one_of(
    st.just({}), st.just({}), st.just({}), st.just({"anthropic-version": "2023-06-01"}),
    st.just({"x-big": "a" * 20000}), st.just({"origin": "http://evil.example"}),
    st.just({"authorization": "Bearer \x01"}), st.just({"host": "evil.example"}),
    st.integers(0, 15).flatmap(lambda n: incomplete if n == 0 else st.just({})),
    st.dictionaries(st.sampled_from(["x-a", "accept", "user-agent"]), st.text(
        st.characters(min_codepoint=32, max_codepoint=126), max_size=30), max_size=2),
)
paths = st.one_of(
    st.sampled_from(API_PATHS), st.sampled_from(API_PATHS), st.sampled_from(API_PATHS),
    st.sampled_from(ODD_PATHS),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30).map(
        lambda t: "/" + t))
requests = st.tuples(st.sampled_from(METHODS), paths, st.sampled_from(CONTENT_TYPES), bodies,
                     extra_headers)


def raw_request(method: str, path: str, content_type: str | None, body: bytes,
                headers: dict[str, str]) -> bytes:
    head = [f"{method} {path} HTTP/1.1"]
    if "host" not in headers:
        head.append("host: localhost")
    head.append("connection: close")
    if content_type is not None:
        head.append(f"content-type: {content_type}")
    if "content-length" not in headers and "transfer-encoding" not in headers:
        head.append(f"content-length: {len(body)}")
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def anthropic_shaped(path: str, headers: dict[str, str]) -> bool:
    clean = path.split("?", 1)[0]
    return clean == "/v1/messages" or clean.startswith("/v1/messages/") \
        or "anthropic-version" in headers


def check_error_shape(body: object, anthropic: bool) -> None:
    if anthropic:
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str)
    else:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)
        assert set(body["error"]) >= {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_twistd(tmp_path_factory.mktemp("fuzz"), "--warm", "0", "--max-concurrent", "4",
                     "--queue", "64", "--read-timeout", "0.5", "--max-body-bytes", "1000000")
    yield d
    d.stop()


def test_fuzz(daemon):
    statuses: Counter = Counter()
    problems: list[str] = []

    # Generation only: problems are collected and listed, not shrunk (bounded time).
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(requests)
    def one(request):
        method, path, content_type, body, headers = request
        raw = raw_request(method, path, content_type, body, headers)
        response = daemon.send(raw)
        statuses[response.status] += 1
        where = f"{method} {path[:60]} {content_type} {body[:80]!r} {list(headers)}"
        if response.status in (0, 500):
            problems.append(f"{response.status}: {where}: {response.body[:200]!r}")
            return
        if response.status >= 400 and method != "HEAD":
            try:
                assert response.headers.get("content-type", "").startswith("application/json")
                check_error_shape(json.loads(response.body), anthropic_shaped(path, headers))
            except (ValueError, AssertionError, KeyError, TypeError) as e:
                problems.append(f"shape {response.status}: {where}: {response.body[:200]!r} {e}")

    one()
    total = sum(statuses.values())
    print(f"\nFUZZ: {total} requests; statuses {dict(sorted(statuses.items()))}; "
          f"500s: {statuses[500]}; unanswered: {statuses[0]}; problems: {len(problems)}")
    assert problems == [], "\n".join(problems[:20])
    assert total >= EXAMPLES

    # Afterwards: nothing held, nothing left running.
    wait_for(lambda: settled(daemon), 30, why=lambda: (daemon.health(), daemon.cli_processes()))
    print(f"FUZZ: afterwards /health {daemon.health()['status']}, 0 slots held, "
          f"{len(daemon.cli_processes())} CLI processes")
