"""
What every request passes before a route sees it: a request id, the browser
origin check (CORS alone does not stop a cross-site POST from running), the
API key, the body size limit. The daemon's own request class carries the
request's record (exchange.py), begun as the site hands the request on and
recorded by the observer (observer.py) when it ends.
"""

from __future__ import annotations

import json
from typing import Any

from urllib.parse import unquote_to_bytes

from attrs import define, field
from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from claude_proxy.auth import INVALID_KEY, KeyRing, presented_key
from claude_proxy.error_shapes import shaped_error, speaks_anthropic
from claude_proxy.errors import APIError
from claude_proxy.exchange import INVALID, Exchange
from claude_proxy.observer import RequestObserver

log = Logger()

# Answered without an API key: health, and the status page's own files (its data needs a key).
OPEN_PATHS = frozenset({b"/health", b"/", b"/status/page.css", b"/status/page.js"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PREFLIGHT_MAX_AGE = b"600"
ENDPOINTS = {
    b"/v1/chat/completions": "chat_completions",
    b"/v1/responses": "responses",
    b"/v1/messages": "messages",
    b"/v1/messages/count_tokens": "count_tokens",
    b"/v1/models": "models",
    b"/v1/usage": "usage",
    b"/health": "health",
    b"/metrics": "metrics",
    b"/": "status_page",
    b"/status/data": "status",
}


def endpoint_of(path: bytes) -> str:
    if path.startswith(b"/v1/models/"):
        return "model"
    if path.startswith(b"/v1/responses/"):
        return "response"  # GET or DELETE of a stored one
    return ENDPOINTS.get(path, "other")


# The whole request (head and body) must arrive within this long: a client
# trickling a byte a second would otherwise hold its connection for ever, as
# every byte restarts Twisted's idle timeout.
READ_TIMEOUT = 60.0


def error_body(path: bytes, anthropic_version: bytes | None, error: APIError) -> tuple[int, bytes]:
    """The status and JSON body of an error answer, in the shape of the path's wire API."""
    status, body = shaped_error(path, anthropic_version, error)
    return status, json.dumps(body).encode("utf-8")


def _error(request: ProxyRequest, error: APIError,
           extra: dict[bytes, bytes] | None = None) -> bytes:
    status, body = error_body(request.path, request.getHeader(b"anthropic-version"), error)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    for name, value in (extra or {}).items():
        request.setHeader(name, value)
    request.exchange.failed(error, INVALID)
    return body


def unknown_path(path: bytes) -> APIError:
    shown = path.decode("utf-8", "replace")
    return APIError(404, f"Unknown path: {shown}", code="not_found")


def path_refusal(path: bytes) -> APIError | None:
    """
    A path no route can take, refused here so that the router never sees it:
    empty segments ("//v1//models", which the router answers with a redirect)
    and percent escapes that are not UTF-8 ("/v1/models/%c3%28").
    """
    if b"//" in path:
        return unknown_path(path)
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return APIError(400, "The path is not valid UTF-8 once percent-decoded.",
                        "invalid_request_error", "invalid_path")
    return None


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
    origins: frozenset[str] = frozenset()
    # Host names answered (None: any). Without API keys only the loopback names are,
    # so a page that rebinds its own name to 127.0.0.1 cannot use the proxy.
    hosts: frozenset[str] | None = None
    isLeaf: bool = field(default=True, init=False)

    def __attrs_post_init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: ProxyRequest) -> bytes | int:
        exchange = request.exchange
        request.setHeader(b"x-request-id", exchange.request_id.encode())
        if speaks_anthropic(request.path, request.getHeader(b"anthropic-version")):
            # Anthropic's name for it: the anthropic SDK's `_request_id`, shown by Claude Code.
            request.setHeader(b"request-id", exchange.request_id.encode())

        refusal = path_refusal(request.path)
        if refusal is not None:
            return _error(request, refusal)

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
            request.setHeader(b"access-control-expose-headers", b"x-request-id, request-id, retry-after")
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

class ProxyRequest(Request):
    """
    The daemon's request: its record (`exchange`), begun as the site hands it
    to the resources; a body that may not exceed the site's max_body_bytes
    (413 at once).
    """

    exchange: Exchange
    _received = 0
    _refused = False

    def process(self) -> None:
        self.exchange = self.channel.site.observer.begin(self)
        super().process()

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

    def _handleStar(self) -> None:
        # "OPTIONS *" asks about the server as a whole: Twisted's answer is right.
        # Any other method on "*" would get an empty 405.
        if self.method == b"OPTIONS":
            super()._handleStar()
            return
        self._answer_json(unknown_path(self.path))

    def processingFailed(self, reason: Any) -> None:
        # Twisted's own answer to an exception no resource caught is an HTML page.
        log.failure("Unhandled error in {path}", reason, path=self.path)
        self._answer_json(APIError(500, "Internal error in the proxy; see its log.",
                                   "server_error", "internal_error"))

    def _answer_json(self, error: APIError) -> None:
        status, body = error_body(self.path, self.getHeader(b"anthropic-version"), error)
        self.setResponseCode(status)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def _refuse(self) -> None:
        # The body is not read: answer and close, as the client may still be sending.
        if self._refused:
            return
        self._refused = True
        limit = self.channel.site.max_body_bytes
        log.info("{method} {path} 413 body over {limit} bytes", method=self.method,
                 path=self.path, status=413, limit=limit)
        self.channel.refuse(APIError(413, f"The request body is over {limit} bytes "
                                          "(--max-body-bytes).", "invalid_request_error",
                                     "request_too_large"))


HEAD_TOO_LARGE = APIError(431, "The request's headers are too large (16 KiB in all at most).",
                          "invalid_request_error", "headers_too_large")
LINE_TOO_LONG = APIError(414, "The request line is too long (16 KiB at most).",
                         "invalid_request_error", "uri_too_long")
MALFORMED = APIError(400, "The request is not well-formed HTTP.", "invalid_request_error",
                     "bad_request")


def read_timed_out(seconds: float) -> APIError:
    return APIError(408, f"The request did not arrive within {seconds:g} s.",
                    "invalid_request_error", "request_timeout")


class ProxyChannel(HTTPChannel):
    """
    An HTTP connection whose every refusal, even of a request too broken to
    reach a resource, is a JSON error in the shape of the request's API; and
    whose requests must arrive whole within the site's read_timeout.
    """

    _deadline: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.site.read_timeout, self._read_timed_out)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def lineReceived(self, line: bytes) -> None:
        # Twisted would answer an empty 400; too large a head is a 431.
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(HEAD_TOO_LARGE)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted drops the connection without a word.
        self.refuse(HEAD_TOO_LARGE if self._started() else LINE_TOO_LONG)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's answer to malformed HTTP: an empty 400.
        self.refuse(MALFORMED)

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _started(self) -> bool:
        """Whether the current request's line has been read (its headers are coming)."""
        return hasattr(self, "_command")

    def _read_timed_out(self) -> None:
        self._deadline = None
        if not self._handlingRequest:
            log.info("A request did not arrive within {seconds}s; closing its connection",
                     seconds=self.site.read_timeout)
            self.refuse(read_timed_out(self.site.read_timeout))

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def refuse(self, error: APIError) -> None:
        """Answer a request that no resource will see, and close the connection."""
        self._cancel_deadline()
        if self.transport is None or getattr(self, "_refused", False):
            return
        self._refused = True
        path = getattr(self, "_path", b"").split(b"?", 1)[0]
        version = self.requests[-1].getHeader(b"anthropic-version") if self.requests else None
        status, body = error_body(path, version, error)
        reason = RESPONSES.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n"
                             % (status, reason, len(body)) + body)
        # Whatever else the client sends is not read: no request is made of it.
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.loseConnection()


class ProxySite(Site):
    """
    The daemon's Site: bounded bodies and read times, JSON refusals;
    access logging is the observer's (no prompt text).
    """

    requestFactory = ProxyRequest
    displayTracebacks = False

    def __init__(self, resource: Resource, observer: RequestObserver, max_body_bytes: int,
                 read_timeout: float = READ_TIMEOUT, **kw: Any) -> None:
        # Twisted would parse form bodies before any resource runs, and answer a
        # bad multipart one with an empty 400: this API speaks JSON whatever the
        # content type says, and its own parser gives the errors.
        super().__init__(resource, parsePOSTFormSubmission=False, **kw)
        self.observer = observer
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout

    def protocol(self) -> ProxyChannel:  # type: ignore[override]
        # Plain HTTP/1.1 (the daemon serves no TLS, so no HTTP/2 to negotiate).
        return ProxyChannel()

    def log(self, request: Request) -> None:
        pass
