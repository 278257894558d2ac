"""
What a wire API's front door gives the core for one request: the neutral
request to run, and the Encoder that shapes its answer. Each door (OpenAI
Chat Completions, OpenAI Responses, Anthropic Messages) parses its own wire
request into this; the route that serves it is the same for all.
"""

from __future__ import annotations

from typing import Protocol

from attrs import frozen
from twisted.web.iweb import IRequest

from claude_proxy.request import NeutralRequest
from claude_proxy.writers import Encoder


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


class FrontDoor(Protocol):
    def open(self, body: dict, http: IRequest, ids: Ids) -> Opened:
        """Parse a wire request (a 4xx APIError if it is bad) and make its encoder."""
