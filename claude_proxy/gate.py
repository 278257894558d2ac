"""
What every request passes before a route sees it: a request id, the browser
origin check (CORS alone does not stop a cross-site POST from running), the
API key, the body size limit; and after it, one access log line and the
request metrics.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from attrs import define, field
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from claude_proxy.auth import INVALID_KEY, KeyRing, presented_key
from claude_proxy.errors import APIError
from claude_proxy.metrics import Metrics

log = Logger()

OPEN_PATHS = frozenset({b"/health"})  # answered without an API key
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PREFLIGHT_MAX_AGE = b"600"
ENDPOINTS = {
    b"/v1/chat/completions": "chat_completions",
    b"/v1/models": "models",
    b"/health": "health",
    b"/metrics": "metrics",
}


@define
class Exchange:
    """What is known of one request, filled in as it is answered; logged at its end."""

    request_id: str
    started: float
    key_id: str | None = None
    model: str = "-"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token: float | None = None  # seconds after `started`
    error_code: str | None = None


def exchange_of(request: Any) -> Exchange:
    return request.exchange


def endpoint_of(path: bytes) -> str:
    if path.startswith(b"/v1/models/"):
        return "model"
    return ENDPOINTS.get(path, "other")


def _error(request: Request, error: APIError, extra: dict[bytes, bytes] | None = None) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", b"application/json")
    for name, value in (extra or {}).items():
        request.setHeader(name, value)
    exchange_of(request).error_code = error.code
    return json.dumps(error.to_json()).encode("utf-8")


def host_of(header: bytes | None) -> str:
    """The host name of a Host header, without its port ("[::1]:3456" → "::1")."""
    host = (header or b"").decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_refused(host: str) -> APIError:
    return APIError(403, f"Requests for the host name {host!r} are not answered: the proxy is "
                         "reached as localhost. (A web page that re-points its own name at this "
                         "machine — DNS rebinding — gets this.)", "invalid_request_error",
                    "host_not_allowed")


def origin_refused(origin: str) -> APIError:
    return APIError(403, f"Requests from the web origin {origin} are not allowed. Start the proxy "
                         "with --cors-origin to allow a web app.", "invalid_request_error",
                    "origin_not_allowed")


@define(slots=False)
class Gate(Resource):
    inner: Any  # the API's resource (a Klein resource: a leaf that routes by itself)
    keys: KeyRing
    metrics: Metrics
    clock: Any  # IReactorTime
    origins: frozenset[str] = frozenset()
    # Host names answered (None: any). Without API keys only the loopback names are,
    # so a page that rebinds its own name to 127.0.0.1 cannot use the proxy.
    hosts: frozenset[str] | None = None
    isLeaf: bool = field(default=True, init=False)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes | int:
        exchange = Exchange(uuid.uuid4().hex, self.clock.seconds())
        request.exchange = exchange
        request.setHeader(b"x-request-id", exchange.request_id.encode())
        request.notifyFinish().addBoth(self._finished, request)

        if self.hosts is not None and not isinstance(request.getHost(), UNIXAddress):
            host = host_of(request.getHeader(b"host"))
            if host and host not in self.hosts:  # browsers always send Host
                return _error(request, host_refused(host))

        raw_origin = request.getHeader(b"origin")
        if raw_origin is not None:
            origin = raw_origin.decode("latin-1")
            if origin not in self.origins:
                return _error(request, origin_refused(origin))
            request.setHeader(b"access-control-allow-origin", raw_origin)
            request.setHeader(b"vary", b"Origin")
            request.setHeader(b"access-control-expose-headers", b"x-request-id, retry-after")
            if request.method == b"OPTIONS":
                return self._preflight(request)

        if self.keys.enabled and request.path not in OPEN_PATHS:
            exchange.key_id = self.keys.match(presented_key(
                request.getHeader(b"authorization"), request.getHeader(b"x-api-key")))
            if exchange.key_id is None:
                return _error(request, INVALID_KEY, {b"www-authenticate": b'Bearer realm="claude-proxy"'})
        return self.inner.render(request)

    def _preflight(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
        request.setHeader(b"access-control-allow-headers",
                          request.getHeader(b"access-control-request-headers") or
                          b"authorization, content-type, x-api-key")
        request.setHeader(b"access-control-max-age", PREFLIGHT_MAX_AGE)
        return b""

    def _finished(self, result: object, request: Request) -> None:
        exchange = exchange_of(request)
        gone = result is not None  # notifyFinish fails when the client went away first
        status = 499 if gone else request.code
        seconds = self.clock.seconds() - exchange.started
        endpoint = endpoint_of(request.path)
        self.metrics.request_done(endpoint, exchange.model, status, seconds)
        log.info(
            "{request_id} {method} {path} {status} {duration_ms}ms model={model} "
            "prompt_tokens={prompt_tokens} completion_tokens={completion_tokens}",
            request_id=exchange.request_id, method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"), status=status,
            duration_ms=round(seconds * 1000), model=exchange.model,
            prompt_tokens=exchange.prompt_tokens, completion_tokens=exchange.completion_tokens,
            first_token_ms=None if exchange.first_token is None else round(exchange.first_token * 1000),
            key_id=exchange.key_id, error_code=exchange.error_code,
        )


class LimitedRequest(Request):
    """A request whose body may not exceed the site's max_body_bytes (413 at once)."""

    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.site.max_body_bytes:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.channel.site.max_body_bytes:
            self._refuse()
            return
        super().handleContentChunk(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def _refuse(self) -> None:
        # The body is not read: answer and close, as the client may still be sending.
        if self._refused:
            return
        self._refused = True
        limit = self.channel.site.max_body_bytes
        body = json.dumps(APIError(413, f"The request body is over {limit} bytes (--max-body-bytes).",
                                   "invalid_request_error", "request_too_large").to_json()).encode()
        log.info("{method} {path} 413 body over {limit} bytes", method=self.method,
                 path=self.path, status=413, limit=limit)
        transport = self.channel.transport
        transport.write(b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: application/json\r\n"
                        b"connection: close\r\ncontent-length: " + str(len(body)).encode() +
                        b"\r\n\r\n" + body)
        transport.loseConnection()


class ProxySite(Site):
    """The daemon's Site: bounded bodies; access logging is the Gate's (no prompt text)."""

    requestFactory = LimitedRequest
    displayTracebacks = False

    def __init__(self, resource: Resource, max_body_bytes: int, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.max_body_bytes = max_body_bytes

    def log(self, request: Request) -> None:
        pass
