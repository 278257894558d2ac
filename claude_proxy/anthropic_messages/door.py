"""The Messages front door: a wire request in, the neutral request and its encoder out."""

from __future__ import annotations

from attrs import frozen
from twisted.web.iweb import IRequest

from claude_proxy.door import Ids, Opened
from claude_proxy.errors import APIError

NOT_YET = APIError(501, "The Messages API is not served yet.", "server_error", "not_implemented")


@frozen
class MessagesDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch

    def open(self, body: dict, http: IRequest, ids: Ids) -> Opened:
        raise NOT_YET

    def count_tokens(self, body: dict) -> dict:
        """An estimate of a request's input tokens; never runs the CLI."""
        raise NOT_YET

    def models(self) -> dict:
        """GET /v1/models in Anthropic's list shape."""
        raise NOT_YET

    def model(self, model_id: str) -> dict:
        """GET /v1/models/{id} in Anthropic's shape."""
        raise NOT_YET
