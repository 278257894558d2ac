"""
What every request passes before a route sees it: a request id, the path
and host checks, the browser origin check (CORS alone does not stop a
cross-site POST from running) and the API key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from attrs import define, field
from twisted.internet.address import UNIXAddress
from twisted.web.resource import Resource

from claude_proxy.auth import INVALID_KEY, KeyRing, presented_key
from claude_proxy.door import Doors
from claude_proxy.errors import APIError
from claude_proxy.exchange import INVALID
from claude_proxy.site import ProxyRequest, error_answer, unknown_path

# Answered without an API key: health, and the status page's own files (its data needs a key).
OPEN_PATHS = frozenset({b"/health", b"/", b"/status/page.css", b"/status/page.js"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PREFLIGHT_MAX_AGE = b"600"


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
class Admission(Resource):
    """
    The resource in front of the API's: a request id on every answer, then the
    path, host, origin (CORS) and key checks; a refusal is in the shape of the
    API the request speaks.
    """

    inner: Any  # the API's resource (a Klein resource: a leaf that routes by itself)
    keys: KeyRing
    doors: Doors
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
        header = self.doors.speaking(request.path, request.getHeader).request_id_header
        if header is not None:
            request.setHeader(header, exchange.request_id.encode())

        refusal = path_refusal(request.path)
        if refusal is not None:
            return self._refuse(request, refusal)

        if self.hosts is not None and not isinstance(request.getHost(), UNIXAddress):
            host = host_of(request.getHeader(b"host"))
            if host and host not in self.hosts:  # browsers always send Host
                return self._refuse(request, host_refused(host))

        raw_origin = request.getHeader(b"origin")
        if raw_origin is not None:
            origin = raw_origin.decode("latin-1")
            if origin not in self.origins:
                return self._refuse(request, origin_refused(origin))
            request.setHeader(b"access-control-allow-origin", raw_origin)
            request.setHeader(b"vary", b"Origin")
            request.setHeader(b"access-control-expose-headers", b"x-request-id, request-id, retry-after")
            if request.method == b"OPTIONS":
                return self._preflight(request)

        if self.keys.enabled and request.path not in OPEN_PATHS:
            exchange.key_id = self.keys.match(presented_key(
                request.getHeader(b"authorization"), request.getHeader(b"x-api-key")))
            if exchange.key_id is None:
                return self._refuse(request, INVALID_KEY, {b"www-authenticate": b'Bearer realm="claude-proxy"'})
        return self.inner.render(request)

    def _refuse(self, request: ProxyRequest, error: APIError,
                extra: dict[bytes, bytes] | None = None) -> bytes:
        body = error_answer(request, self.doors, error)
        for name, value in (extra or {}).items():
            request.setHeader(name, value)
        request.exchange.failed(error, INVALID)
        return body

    def _preflight(self, request: ProxyRequest) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
        request.setHeader(b"access-control-allow-headers",
                          request.getHeader(b"access-control-request-headers") or
                          b"authorization, content-type, x-api-key")
        request.setHeader(b"access-control-max-age", PREFLIGHT_MAX_AGE)
        return b""
