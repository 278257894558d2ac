"""
The one place a finished request is recorded: its metrics, its access log
line and, for a wire API's request, the status page's history, all read from
its record (exchange.py) when the request ends (or its client goes away).
"""

from __future__ import annotations

import uuid

from attrs import define
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from claude_proxy.door import Labels
from claude_proxy.exchange import REFUSED, RUN_FAILED, Exchange
from claude_proxy.history import History, record_of
from claude_proxy.metrics import Metrics

log = Logger()

# Logged at debug level only: the status page polls every few seconds.
QUIET_ENDPOINTS = frozenset({"status"})


@define
class RequestObserver:
    metrics: Metrics
    reactor: IReactorTime
    labels: Labels  # a path's metrics label and API name, from the routes
    history: History | None = None  # the status page's record of recent requests

    def begin(self, request: IRequest) -> Exchange:
        """A request reaches the daemon's resources: its record, watched to its end."""
        exchange = Exchange(uuid.uuid4().hex, self.reactor.seconds())
        # notifyFinish fails when the client went away first.
        request.notifyFinish().addBoth(
            lambda result: self.finished(request, exchange, gone=result is not None))
        return exchange

    def finished(self, request: IRequest, exchange: Exchange, gone: bool) -> None:
        status = 499 if gone else request.code
        seconds = self.reactor.seconds() - exchange.started
        endpoint = self.labels.endpoint_of(request.path)
        usage = exchange.usage
        self.metrics.request_done(endpoint, exchange.model, status, seconds)
        if usage is not None:
            self.metrics.answered(exchange.model, exchange.first_token,
                                  usage.prompt_tokens, usage.output_tokens)
        if exchange.error is not None and exchange.error_kind == RUN_FAILED:
            self.metrics.failed(exchange.error.code or "unknown")
        elif exchange.error is not None and exchange.error_kind == REFUSED:
            self.metrics.refused(exchange.error.code or "unknown")
        record = record_of(self.labels.api_of(request.path), request.getHeader(b"user-agent"),
                           exchange, status, seconds)
        if record is not None and self.history is not None:
            self.history.add(record)
        emit = log.debug if endpoint in QUIET_ENDPOINTS else log.info
        emit(
            "{request_id} {method} {path} {status} {duration_ms}ms model={model} "
            "prompt_tokens={prompt_tokens} completion_tokens={completion_tokens}",
            request_id=exchange.request_id, method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"), status=status,
            duration_ms=round(seconds * 1000), model=exchange.model,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            completion_tokens=usage.output_tokens if usage is not None else 0,
            first_token_ms=None if exchange.first_token is None
            else round(exchange.first_token * 1000),
            key_id=exchange.key_id, error_code=exchange.error_code,
        )
