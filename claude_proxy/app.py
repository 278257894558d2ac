"""
The daemon's routes, and nothing else: its own (/health, /metrics, /v1/usage,
the status page) and each wire API's, which its door declares (door.py); the
doors' run routes hand their requests to dispatch.py. Every error answered
here is in the shape of the API its request speaks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from inspect import isawaitable
from typing import Any

from attrs import Factory, define, field
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from claude_proxy import __version__
from claude_proxy.accounts import Accounts
from claude_proxy.anthropic_messages.door import MessagesDoor
from claude_proxy.cli_probe import CLIProbe
from claude_proxy.dispatch import Dispatch
from claude_proxy.door import Doors, Labels, Route
from claude_proxy.errors import APIError
from claude_proxy.exchange import INVALID, REFUSED
from claude_proxy.history import History
from claude_proxy.live_sessions import SessionsSnapshot
from claude_proxy.metrics import CONTENT_TYPE, Metrics
from claude_proxy.openai_chat.door import ChatDoor
from claude_proxy.openai_responses.door import ResponsesDoor
from claude_proxy.pool import PoolSnapshot
from claude_proxy.runner import Runner
from claude_proxy.site import ProxyRequest, error_answer, unknown_path
from claude_proxy.status import page
from claude_proxy.status.snapshot import snapshot

log = Logger()


def _json(request: IRequest, status: int, obj: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj).encode("utf-8")


def _warm(pool: PoolSnapshot | None) -> dict:
    if pool is None:
        return {"size": 0}
    return {"size": pool.size, "waiting": pool.waiting, "ready": pool.ready,
            "hits": pool.hits, "misses": pool.misses}


def _sessions(sessions: SessionsSnapshot | None) -> dict:
    if sessions is None:
        return {"size": 0}
    return {"size": sessions.size, "ttl_seconds": sessions.ttl, "live": sessions.live,
            "waiting_for_tools": sessions.waiting_for_tools, "continued": sessions.continued,
            "fallbacks": dict(sessions.fallbacks), "ended": dict(sessions.ended)}


def _answering(routes: list[Route]) -> Callable[..., Any]:
    """
    The Klein endpoint of one rule and its methods: the route whose door claims
    the request answers, else the one that claims nothing; a dict is its JSON.
    """
    async def answer(request: IRequest, **args: Any) -> bytes | None:
        route = next((r for r in routes if r.claims is not None and r.claims(request)),
                     None) or next(r for r in routes if r.claims is None)
        body = route.answer(request, **args)
        if isawaitable(body):
            body = await body
        return _json(request, 200, body) if isinstance(body, dict) else body

    return answer


@define(slots=False)
class ProxyAPI:
    dispatch: Dispatch  # what the doors' run routes hand their requests to
    probe: CLIProbe
    metrics: Metrics
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
    # Each account's login probe, when accounts are named (--account).
    logins: Mapping[str, CLIProbe] = field(factory=dict)
    started: float = field(default=Factory(lambda self: self.reactor.seconds(), takes_self=True))
    chat: ChatDoor = field(default=Factory(lambda self: ChatDoor(self.image_urls), takes_self=True))
    responses: ResponsesDoor = field(
        default=Factory(lambda self: ResponsesDoor(self.image_urls, reactor=self.reactor),
                        takes_self=True))
    messages: MessagesDoor = field(
        default=Factory(lambda self: MessagesDoor(self.image_urls), takes_self=True))
    history: History = field(factory=History)  # recent requests, for the status page
    doors: Doors = field(init=False)
    labels: Labels = field(init=False)  # each path's metrics label and API name
    _router: Klein = field(factory=Klein, init=False)

    def __attrs_post_init__(self) -> None:
        # The wire APIs, in the order they claim a request; OpenAI's shape for the rest.
        self.doors = Doors((self.messages, self.chat, self.responses), fallback=self.chat)
        routes = self._own_routes() + tuple(
            route for door in self.doors.listed for route in door.routes(self.dispatch.serve))
        self.labels = Labels(routes)
        shared: dict[tuple[str, tuple[str, ...]], list[Route]] = {}
        for route in routes:
            shared.setdefault((route.rule, route.methods), []).append(route)
        for (rule, methods), same in shared.items():
            self._router.route(rule, methods=list(methods),
                               endpoint=f"{' '.join(methods)} {rule}")(_answering(same))
        handle = self._router.handle_errors
        handle(APIError)(self.api_error)
        handle(NotFound)(self.not_found)
        handle(MethodNotAllowed)(self.method_not_allowed)
        handle(Exception)(self.internal_error)

    def _own_routes(self) -> tuple[Route, ...]:
        get = ("GET",)
        return (
            Route("/health", get, "health", self.health),
            Route("/metrics", get, "metrics", self.prometheus),
            Route("/v1/usage", get, "usage",
                  lambda request: self.accounts.to_json(self.reactor.seconds())),
            Route("/", get, "status_page", lambda request: page.serve(request, "index.html")),
            Route("/status/page.css", get, "other",
                  lambda request: page.serve(request, "page.css")),
            Route("/status/page.js", get, "other", lambda request: page.serve(request, "page.js")),
            Route("/status/data", get, "status", self.status_data),
            # Claude Code's preconnect (its preflight, HEAD /, is the status page's HEAD).
            Route("/api/hello", ("HEAD",), "other", lambda request: b""),
        )

    @property
    def runner(self) -> Runner:
        return self.dispatch.runner

    @property
    def accounts(self) -> Accounts:
        return self.dispatch.accounts

    @property
    def reactor(self) -> IReactorTime:
        return self.dispatch.reactor

    def resource(self) -> Any:
        return self._router.resource()

    async def health(self, request: IRequest) -> bytes:
        health = await self.probe.check()
        status, ok = health.status, health.ok
        load = self.runner.snapshot()
        body = {
            "status": status,
            "cli": {"path": health.path, "version": health.version, "error": health.error},
            "login": health.login,
            "in_flight": load.running,
            "queued": load.queued,
            "warm": _warm(load.warm),
            "sessions": _sessions(load.sessions),
            "uptime_seconds": round(self.reactor.seconds() - self.started, 1),
        }
        if self.logins:
            # Several accounts: ready while the CLI runs and any account is logged in.
            logins = {name: await probe.check() for name, probe in self.logins.items()}
            ok = health.version is not None and any(h.ok for h in logins.values())
            status = "ok" if ok else health.status
            skipped = {a["account"]: a["skipped"]
                       for a in self.accounts.to_json(self.reactor.seconds())["data"]}
            body["status"] = status
            body["accounts"] = [{"account": name, "status": h.status, "login": h.login,
                                 "skipped": skipped[name]} for name, h in logins.items()]
        return _json(request, 200 if ok else 503, body)

    async def status_data(self, request: IRequest) -> bytes:
        probes = self.logins or {self.accounts.accounts[0].name: self.probe}
        logins = {name: await probe.check() for name, probe in probes.items()}
        request.setHeader(b"cache-control", b"no-store")
        return _json(request, 200, snapshot(self.reactor.seconds(), self.started, __version__,
                                            self.accounts, logins, self.runner.snapshot(),
                                            self.history))

    def prometheus(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self.metrics.render()

    def api_error(self, request: ProxyRequest, failure: Failure) -> bytes:
        error = failure.value
        # Unless a run failed with it: refused before any CLI ran (queue full, a key's
        # limit, shutting down), or a bad request.
        request.exchange.failed(error, REFUSED if error.status == 429 or error.status >= 500
                                else INVALID)
        if error.retry_after is not None:
            request.setHeader(b"retry-after", str(error.retry_after).encode())
        return error_answer(request, self.doors, error)

    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return error_answer(request, self.doors, unknown_path(request.path))

    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode("ascii", "replace")
        return error_answer(request, self.doors, APIError(
            405, f"Method {method} is not allowed here.", code="method_not_allowed"))

    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Unhandled error in {path}", failure, path=request.path)
        return error_answer(request, self.doors, APIError(
            500, "Internal error in the proxy; see its log.", "server_error", "internal_error"))
