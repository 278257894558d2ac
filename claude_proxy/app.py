"""
The HTTP API: a class-based Klein app serving /health, /metrics, /v1/models
and each wire API's front door through one route body (`_serve`), with every
error in the shape of the API its path belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from attrs import Factory, define, field
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from claude_proxy import __version__
from claude_proxy.accounts import Account, Accounts, conversation_key
from claude_proxy.answer import Answer
from claude_proxy.anthropic_messages.door import MessagesDoor
from claude_proxy.body import parse_body
from claude_proxy.cli_probe import CLIProbe
from claude_proxy.continuation import continuation_of
from claude_proxy.door import FrontDoor, Ids, Opened
from claude_proxy.error_shapes import shaped_error, speaks_anthropic, unified_headers
from claude_proxy.errors import APIError
from claude_proxy.events import RateLimit
from claude_proxy.exchange import INVALID, REFUSED, RUN_FAILED, Exchange
from claude_proxy.gate import ProxyRequest
from claude_proxy.history import History
from claude_proxy.live_sessions import SessionsSnapshot
from claude_proxy.metrics import CONTENT_TYPE, Metrics
from claude_proxy.models import model_list, model_object, resolve
from claude_proxy.openai_chat.door import ChatDoor
from claude_proxy.openai_responses.door import ResponsesDoor
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.pool import PoolSnapshot
from claude_proxy.runner import Runner
from claude_proxy.status import page
from claude_proxy.status.snapshot import snapshot
from claude_proxy.writers import HEARTBEAT_SECONDS, HOLD_HEADERS_SECONDS, BufferedWriter, StreamWriter

log = Logger()


def _json(request: IRequest, status: int, obj: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj).encode("utf-8")


def _set_headers(request: IRequest, headers: dict[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name.encode(), value.encode())


def _anthropic(request: IRequest) -> bool:
    """The anthropic SDK and Claude Code send this header; OpenAI clients do not."""
    return request.getHeader(b"anthropic-version") is not None


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


@define(slots=False)
class ProxyAPI:
    runner: Runner
    settings: CLISettings
    probe: CLIProbe
    environ: Mapping[str, str]
    reactor: IReactorTime
    metrics: Metrics
    hold: float = HOLD_HEADERS_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
    max_per_key: int = 0  # chat requests at once per API key; 0: no limit
    accounts: Accounts = field(factory=Accounts)
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
    _per_key: dict = field(factory=dict)

    app = Klein()

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/health", methods=["GET"])
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

    @app.route("/", methods=["GET"])
    def status_page(self, request: IRequest) -> bytes:
        return page.serve(request, "index.html")

    @app.route("/status/page.css", methods=["GET"])
    def status_css(self, request: IRequest) -> bytes:
        return page.serve(request, "page.css")

    @app.route("/status/page.js", methods=["GET"])
    def status_js(self, request: IRequest) -> bytes:
        return page.serve(request, "page.js")

    @app.route("/status/data", methods=["GET"])
    async def status_data(self, request: IRequest) -> bytes:
        probes = self.logins or {self.accounts.accounts[0].name: self.probe}
        logins = {name: await probe.check() for name, probe in probes.items()}
        request.setHeader(b"cache-control", b"no-store")
        return _json(request, 200, snapshot(self.reactor.seconds(), self.started, __version__,
                                            self.accounts, logins, self.runner.snapshot(),
                                            self.history))

    @app.route("/api/hello", methods=["HEAD"])
    def preconnect(self, request: IRequest) -> bytes:
        """Claude Code's preconnect (its preflight, HEAD /, is the status page's HEAD)."""
        return b""

    @app.route("/metrics", methods=["GET"])
    def prometheus(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self.metrics.render()

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: IRequest) -> bytes:
        if _anthropic(request):
            return _json(request, 200, self.messages.models())
        return _json(request, 200, model_list())

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def model(self, request: IRequest, model_id: str) -> bytes:
        if _anthropic(request):
            return _json(request, 200, self.messages.model(model_id))
        return _json(request, 200, model_object(resolve(model_id).id))

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat_completions(self, request: IRequest) -> Any:
        return self._serve(request, self.chat)

    @app.route("/v1/responses", methods=["POST"])
    def create_response(self, request: IRequest) -> Any:
        return self._serve(request, self.responses)

    @app.route("/v1/responses/<response_id>", methods=["GET"])
    def get_response(self, request: IRequest, response_id: str) -> bytes:
        return _json(request, 200, self.responses.get(response_id))

    @app.route("/v1/responses/<response_id>", methods=["DELETE"])
    def delete_response(self, request: IRequest, response_id: str) -> bytes:
        return _json(request, 200, self.responses.delete(response_id))

    @app.route("/v1/messages", methods=["POST"])
    def create_message(self, request: IRequest) -> Any:
        return self._serve(request, self.messages)

    @app.route("/v1/messages/count_tokens", methods=["POST"])
    def count_tokens(self, request: IRequest) -> bytes:
        return _json(request, 200, self.messages.count_tokens(parse_body(request.content.read())))

    async def _serve(self, request: ProxyRequest, door: FrontDoor) -> bytes | None:
        """One request through a front door: parse, plan, run, and encode its answer."""
        exchange = request.exchange
        key = exchange.key_id
        ids = Ids(exchange.request_id, int(self.reactor.seconds()))
        opened = door.open(parse_body(request.content.read()), request, ids)
        exchange.model = opened.request.model.id
        if opened.ignored:
            log.debug("{request_id}: ignored parameters: {params}",
                      request_id=exchange.request_id, params=", ".join(opened.ignored))
        self._admit(key)
        try:
            body = await self._answer(request, opened)
        finally:
            self._release(key)
        return None if body is None else _json(request, 200, body)

    async def _answer(self, request: ProxyRequest, opened: Opened) -> dict | None:
        """
        The answer from the conversation's account; when an account refuses
        (a limit, extra usage, no login) before any byte went out, the next.
        """
        exchange = request.exchange
        wanted = opened.request
        accounts = self.accounts.route(conversation_key(wanted, exchange.key_id),
                                       self.reactor.seconds())
        for account in accounts:
            plan = build_plan(wanted, self.settings, account.environ(self.environ),
                              self.runner.aliases)
            writer = self._writer(request, opened, account)
            exchange.account = account.name
            _set_headers(request, self.accounts.headers(account))

            def observed(report: RateLimit, account: Account = account) -> None:
                # Also after the answer: a live session's CLI reports it after its last event.
                self.accounts.observed(account, report, self.reactor.seconds())

            try:
                writer.begin(self.runner.submit(
                    plan, writer, continuation_of(plan, wanted, exchange.key_id), observed,
                    self.accounts.awaits_quota(account)))
                body = await writer.done
            except APIError as error:
                if writer.committed or not self.accounts.rejected(account, error,
                                                                  self.reactor.seconds()) \
                        or account is accounts[-1]:
                    self._account(exchange, writer)
                    raise
                log.info("{request_id}: account {account} refused ({code}); trying the next",
                         request_id=exchange.request_id, account=account.name, code=error.code)
                continue
            self._account(exchange, writer)
            self.accounts.answered(account, None if writer.early else writer.quota_seen)
            return body
        raise self.accounts.refusal(self.reactor.seconds())

    def _writer(self, request: ProxyRequest, opened: Opened,
                account: Account) -> BufferedWriter | StreamWriter:
        exchange = request.exchange
        wanted = opened.request

        def first_output() -> None:
            exchange.first_token = self.reactor.seconds() - exchange.started

        def quota(report: RateLimit) -> None:
            # The account has seen it already (the run's on_quota): the headers follow it.
            if not request.startedWriting:
                _set_headers(request, self.accounts.headers(account))

        answer = Answer(wanted.stop, structured=wanted.output is not None)
        common = dict(answer=answer, on_output=first_output, on_quota=quota)
        if wanted.stream:
            return StreamWriter(opened.encoder, request, self.reactor, self.hold, self.heartbeat,
                                **common)
        return BufferedWriter(opened.encoder, **common)

    def _admit(self, key: str | None) -> None:
        if key is None or not self.max_per_key:
            return
        if self._per_key.get(key, 0) >= self.max_per_key:
            raise APIError(429, f"This API key already has {self.max_per_key} requests running "
                                "(--max-per-key).", "rate_limit_error", "key_concurrency_limit",
                           retry_after=1)
        self._per_key[key] = self._per_key.get(key, 0) + 1

    def _release(self, key: str | None) -> None:
        if key is None or not self.max_per_key:
            return
        self._per_key[key] -= 1
        if not self._per_key[key]:
            del self._per_key[key]

    @app.route("/v1/usage", methods=["GET"])
    def usage(self, request: IRequest) -> bytes:
        return _json(request, 200, self.accounts.to_json(self.reactor.seconds()))

    def _account(self, exchange: Exchange, writer: BufferedWriter | StreamWriter) -> None:
        """What the run that answered (or failed last) tells the request's record."""
        if writer.usage is not None:
            exchange.usage = writer.usage
        if writer.error is not None:
            # Also when it went out as an SSE event after a 200.
            exchange.failed(writer.error, RUN_FAILED)

    @app.handle_errors(APIError)
    def api_error(self, request: ProxyRequest, failure: Failure) -> bytes:
        error = failure.value
        # Unless a run failed with it: refused before any CLI ran (queue full, a key's
        # limit, shutting down), or a bad request.
        request.exchange.failed(error, REFUSED if error.status == 429 or error.status >= 500
                                else INVALID)
        if error.retry_after is not None:
            request.setHeader(b"retry-after", str(error.retry_after).encode())
        if speaks_anthropic(request.path, request.getHeader(b"anthropic-version")):
            _set_headers(request, unified_headers(error))
        return self._error(request, error)

    def _error(self, request: IRequest, error: APIError) -> bytes:
        status, body = shaped_error(request.path, request.getHeader(b"anthropic-version"), error)
        return _json(request, status, body)

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return self._error(request, APIError(404, f"Unknown path: {path}", code="not_found"))

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode("ascii", "replace")
        return self._error(request, APIError(
            405, f"Method {method} is not allowed here.", code="method_not_allowed"))

    @app.handle_errors(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Unhandled error in {path}", failure, path=request.path)
        return self._error(request, APIError(
            500, "Internal error in the proxy; see its log.", "server_error", "internal_error"))
