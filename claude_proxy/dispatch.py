"""
One wire request to its answer: its door parses it, the per-key limit admits
it, the conversation's account is chosen (accounts.py), the plan is built for
that account (plan.py), the runner runs it (runner.py, turn.py) and a writer
shapes the answer through the door's encoder (writers.py). When an account
refuses before any byte went out (a limit, extra usage, no login), the next
one answers. What the run tells of the request goes into its record.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from claude_proxy.accounts import Account, Accounts, conversation_key
from claude_proxy.answer import Answer
from claude_proxy.body import parse_body
from claude_proxy.continuation import continuation_of
from claude_proxy.door import FrontDoor, Ids, Opened
from claude_proxy.errors import APIError
from claude_proxy.events import RateLimit
from claude_proxy.exchange import RUN_FAILED, Exchange
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.runner import Runner
from claude_proxy.site import ProxyRequest
from claude_proxy.writers import HEARTBEAT_SECONDS, HOLD_HEADERS_SECONDS, BufferedWriter, StreamWriter

log = Logger()


def set_headers(request: ProxyRequest, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name.encode(), value.encode())


@define
class Dispatch:
    runner: Runner
    settings: CLISettings
    environ: Mapping[str, str]
    reactor: IReactorTime
    accounts: Accounts = field(factory=Accounts)
    hold: float = HOLD_HEADERS_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    max_per_key: int = 0  # requests at once per API key; 0: no limit
    _per_key: dict[str, int] = field(factory=dict)

    async def serve(self, request: ProxyRequest, door: FrontDoor) -> dict | None:
        """
        One request through a front door: parse, plan, run, and encode its
        answer; None when the answer went out as a stream.
        """
        exchange = request.exchange
        key = exchange.key_id
        ids = Ids(exchange.request_id, int(self.reactor.seconds()))
        opened = door.open(parse_body(request.content.read()), ids)
        exchange.model = opened.request.model.id
        if opened.ignored:
            log.debug("{request_id}: ignored parameters: {params}",
                      request_id=exchange.request_id, params=", ".join(opened.ignored))
        self._admit(key)
        try:
            return await self._answer(request, opened)
        finally:
            self._release(key)

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
            set_headers(request, self.accounts.headers(account))

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
                    _record(exchange, writer)
                    raise
                log.info("{request_id}: account {account} refused ({code}); trying the next",
                         request_id=exchange.request_id, account=account.name, code=error.code)
                continue
            _record(exchange, writer)
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
                set_headers(request, self.accounts.headers(account))

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


def _record(exchange: Exchange, writer: BufferedWriter | StreamWriter) -> None:
    """What the run that answered (or failed last) tells the request's record."""
    if writer.usage is not None:
        exchange.usage = writer.usage
    if writer.error is not None:
        # Also when it went out as an SSE event after a 200.
        exchange.failed(writer.error, RUN_FAILED)
