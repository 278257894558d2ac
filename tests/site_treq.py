"""
treq in memory against the daemon's own Site, as treq.testing.StubTreq is
against a bare Resource (whose Site would make twisted.web's plain requests,
without the daemon's request class and its record). Each request is pumped
through iosim between treq's client and a channel of the Site.
"""

from __future__ import annotations

from typing import Any

import treq
from attrs import define, field
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.client import Agent, URI
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer
from twisted.web.server import Site
from zope.interface import implementer

SERVER = IPv4Address("TCP", "127.0.0.1", 3456)
CLIENT = IPv4Address("TCP", "127.0.0.1", 31337)


@implementer(IBodyProducer)
@define
class _Body:
    """The whole body at once (treq's default producer would wait on a cooperator)."""

    body: bytes
    length: int = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.length = len(self.body)

    def startProducing(self, consumer: Any) -> Deferred:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgentEndpointFactory)
@define
class _Endpoints:
    reactor: MemoryReactorClock

    def endpointForURI(self, uri: URI) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, SERVER.host, SERVER.port)


@implementer(IAgent)
@define
class _SiteAgent:
    site: Site
    reactor: MemoryReactorClock = field(factory=MemoryReactorClock)
    pumps: list[iosim.IOPump] = field(factory=list)

    def request(self, method: bytes, uri: bytes, headers: Any = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred:
        agent = Agent.usingEndpointFactory(self.reactor, _Endpoints(self.reactor))
        response = agent.request(method, uri, headers, bodyProducer)
        _, _, factory, _, _ = self.reactor.tcpClients.pop()
        server = self.site.buildProtocol(CLIENT)
        client = factory.buildProtocol(SERVER)
        self.pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, isServer=True, hostAddress=SERVER,
                                        peerAddress=CLIENT),
            client, iosim.FakeTransport(client, isServer=False, hostAddress=CLIENT,
                                        peerAddress=SERVER)))
        return response

    def flush(self) -> None:
        for pump in list(self.pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self.pumps.remove(pump)


class SiteTreq:
    """treq's functions (get, post, content, …) against `site`, and flush() as StubTreq's."""

    def __init__(self, site: Site) -> None:
        agent = _SiteAgent(site)
        client = HTTPClient(agent=agent, data_to_body_producer=_Body)
        for name in treq.__all__:
            setattr(self, name, getattr(client, name, None) or getattr(treq, name))
        self.flush = agent.flush
