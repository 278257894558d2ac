"""
The daemon's HTTP site: its request class (ProxyRequest: the request's record,
a bounded body), its channel (ProxyChannel: a whole request within the read
timeout, a bounded head) and every refusal of HTTP too broken to reach a
resource as a JSON error in the shape of the API the request speaks.

Twisted has no public hook for some of this, so the classes here use these
private members of twisted.web's (tests/test_site.py pins each of them, and
fails if a Twisted release renames or drops one):

- HTTPChannel._handlingRequest: a whole request is in, being answered (read)
- HTTPChannel._receivedHeaderSize: the head's bytes read so far (read)
- HTTPChannel._command, HTTPChannel._path: set once the request line is read (read)
- HTTPChannel._respondToBadRequestAndDisconnect: its empty 400 (overridden)
- Request._handleStar: its answer to a request of "*" (overridden)
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from claude_proxy.door import Doors
from claude_proxy.errors import APIError
from claude_proxy.exchange import Exchange
from claude_proxy.observer import RequestObserver

log = Logger()

# The whole request (head and body) must arrive within this long: a client
# trickling a byte a second would otherwise hold its connection for ever, as
# every byte restarts Twisted's idle timeout.
READ_TIMEOUT = 60.0


def unknown_path(path: bytes) -> APIError:
    shown = path.decode("utf-8", "replace")
    return APIError(404, f"Unknown path: {shown}", code="not_found")


def error_answer(request: Request, doors: Doors, error: APIError) -> bytes:
    """Set a request's status and headers for an error in its API's shape; its JSON body."""
    shaped = doors.error(request.path, request.getHeader, error)
    request.setResponseCode(shaped.status)
    request.setHeader(b"content-type", b"application/json")
    for name, value in shaped.headers.items():
        request.setHeader(name.encode(), value.encode())
    return json.dumps(shaped.body).encode("utf-8")


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
        # Twisted private: what Request.process calls for a request of "*".
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
        body = error_answer(self, self.channel.site.doors, error)
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
        # (_handlingRequest, Twisted private: a whole request is in, being answered.)
        if self._deadline is None and not self._handlingRequest:
            self._deadline = self.callLater(self.site.read_timeout, self._read_timed_out)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._cancel_deadline()
        super().allContentReceived()

    def lineReceived(self, line: bytes) -> None:
        # Twisted would answer an empty 400; too large a head is a 431.
        # (_receivedHeaderSize, Twisted private: the head's bytes read so far.)
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(HEAD_TOO_LARGE)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # Twisted drops the connection without a word.
        self.refuse(HEAD_TOO_LARGE if self._started() else LINE_TOO_LONG)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted private: its answer to malformed HTTP, an empty 400.
        self.refuse(MALFORMED)

    def connectionLost(self, reason: Any) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _started(self) -> bool:
        """Whether the current request's line has been read (its headers are coming)."""
        return hasattr(self, "_command")  # Twisted private: set once the request line is read

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
        # Twisted private: the request line's path, once read.
        path = getattr(self, "_path", b"").split(b"?", 1)[0]
        request = self.requests[-1] if self.requests else None
        shaped = self.site.doors.error(
            path, request.getHeader if request is not None else lambda name: None, error)
        status, body = shaped.status, json.dumps(shaped.body).encode("utf-8")
        reason = RESPONSES.get(status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n"
                             % (status, reason, len(body)) + body)
        # Whatever else the client sends is not read: no request is made of it.
        self.dataReceived = lambda data: None  # type: ignore[method-assign]
        self.loseConnection()


class ProxySite(Site):
    """
    The daemon's Site: bounded bodies and read times, JSON refusals in the
    shape of the API a request speaks; each request's record begun by the
    observer, which also logs it (no prompt text).
    """

    requestFactory = ProxyRequest
    displayTracebacks = False

    def __init__(self, resource: Resource, observer: RequestObserver, doors: Doors,
                 max_body_bytes: int, read_timeout: float = READ_TIMEOUT, **kw: Any) -> None:
        # Twisted would parse form bodies before any resource runs, and answer a
        # bad multipart one with an empty 400: this API speaks JSON whatever the
        # content type says, and its own parser gives the errors.
        super().__init__(resource, parsePOSTFormSubmission=False, **kw)
        self.observer = observer
        self.doors = doors
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout

    def protocol(self) -> ProxyChannel:  # type: ignore[override]
        # Plain HTTP/1.1 (the daemon serves no TLS, so no HTTP/2 to negotiate).
        return ProxyChannel()

    def log(self, request: Request) -> None:
        pass
