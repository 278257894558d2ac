"""
What a wire API's front door is to the daemon. Each door (OpenAI Chat
Completions, OpenAI Responses, Anthropic Messages) is a package of its own
that owns its routes (paths, methods, metrics labels), its error shape and
which requests speak it; for one request it parses the wire request into the
neutral request and makes the Encoder that shapes its answer. Nothing outside
the door packages names a wire path: `Doors` answers for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from attrs import field, frozen
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from claude_proxy.errors import APIError
from claude_proxy.request import NeutralRequest
from claude_proxy.writers import Encoder

# A request's header by name (request.getHeader), for telling which API it speaks.
Header = Callable[[bytes], "bytes | None"]


@frozen
class Ids:
    """What names one response: the daemon's request id and the time it began."""

    request_id: str
    created: int


@frozen
class Opened:
    request: NeutralRequest
    encoder: Encoder
    ignored: tuple[str, ...] = ()  # parameters accepted and documented as ignored


@frozen
class ErrorAnswer:
    """An error as a wire API answers it: status, JSON body, headers of its own."""

    status: int
    body: dict
    headers: Mapping[str, str] = field(factory=dict)


@frozen
class Route:
    """
    One of a door's routes: a Klein rule and its methods, its metrics label,
    and what answers it (a JSON body, None when the answer was written as a
    stream, or an awaitable of either). Two doors may share a route; the one
    whose `claims` says so answers, else the one without `claims`.
    """

    rule: str
    methods: tuple[str, ...]
    endpoint: str  # the metrics label
    answer: Callable[..., Any]  # (request, **the rule's arguments)
    claims: Callable[[IRequest], bool] | None = None
    api: str | None = None  # the API's name in the status page's history: its run route


# Runs a wire request through a door to its answer (dispatch.Dispatch.serve).
Serve = Callable[[IRequest, "FrontDoor"], Any]


class FrontDoor(Protocol):
    def open(self, body: dict, ids: Ids) -> Opened:
        """Parse a wire request (a 4xx APIError if it is bad) and make its encoder."""


class WireAPI(FrontDoor, Protocol):
    """A door as the daemon lists it."""

    # The API's own name for the response header that carries the request id
    # (besides the daemon's X-Request-Id), if it has one.
    request_id_header: bytes | None

    def routes(self, serve: Serve) -> tuple[Route, ...]:
        """Its routes; a run route hands its request to `serve`."""

    def speaks(self, path: bytes, header: Header) -> bool:
        """Whether a request (any path, any route or none) is this API's: its error shape."""

    def error(self, error: APIError) -> ErrorAnswer: ...


@frozen
class Doors:
    """
    The wire APIs the daemon serves. `listed` is in the order they claim a
    request (the first that speaks it answers its errors); `fallback` answers
    the rest (a path no door knows). A fourth API is one more door here.
    """

    listed: tuple[WireAPI, ...]
    fallback: WireAPI

    def speaking(self, path: bytes, header: Header) -> WireAPI:
        return next((d for d in self.listed if d.speaks(path, header)), self.fallback)

    def error(self, path: bytes, header: Header, error: APIError) -> ErrorAnswer:
        """An error in the shape of the API a request speaks."""
        return self.speaking(path, header).error(error)


@frozen
class Labels:
    """A request path's metrics label and its API's name, from the routes that serve it."""

    routes: tuple[Route, ...]
    _map: Map = field(init=False)

    def __attrs_post_init__(self) -> None:
        # Each label once per rule: a rule two doors share has one label.
        rules = {route.rule: route for route in self.routes}
        object.__setattr__(self, "_map", Map(
            [Rule(rule, endpoint=route) for rule, route in rules.items()]))

    def _route(self, path: bytes) -> Route | None:
        try:
            route, _ = self._map.bind("localhost").match(path.decode("utf-8", "replace"))
        except HTTPException:  # no route, a redirect, another method
            return None
        return route

    def endpoint_of(self, path: bytes) -> str:
        route = self._route(path)
        return "other" if route is None else route.endpoint

    def api_of(self, path: bytes) -> str | None:
        """The API's name of a run route's path (Chat, Responses, Messages)."""
        route = self._route(path)
        return None if route is None else route.api
