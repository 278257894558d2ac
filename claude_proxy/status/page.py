"""The status page's files, read once from the package and served as they are."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from attrs import frozen
from twisted.web.iweb import IRequest

# Only the daemon's own files: no inline script or style, nothing from elsewhere;
# and the page may not be framed by another site.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
TYPES = {"html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
         "js": "text/javascript; charset=utf-8"}
FILES = ("index.html", "page.css", "page.js")


@frozen
class Asset:
    body: bytes
    content_type: str


@cache
def asset(name: str) -> Asset:
    if name not in FILES:
        raise KeyError(name)
    body = files("claude_proxy.status").joinpath("static", name).read_bytes()
    return Asset(body, TYPES[name.rpartition(".")[2]])


def serve(request: IRequest, name: str) -> bytes:
    """One of the page's files, with the headers that keep it to itself."""
    found = asset(name)
    request.setHeader(b"content-type", found.content_type.encode())
    for header, value in SECURITY_HEADERS.items():
        request.setHeader(header.encode(), value.encode())
    return found.body
