"""The Responses front door: a wire request in, the neutral request and its encoder out."""

from __future__ import annotations

from attrs import define
from twisted.web.iweb import IRequest

from claude_proxy.door import Ids, Opened
from claude_proxy.errors import APIError

NOT_YET = APIError(501, "The Responses API is not served yet.", "server_error", "not_implemented")


@define
class ResponsesDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch

    def open(self, body: dict, http: IRequest, ids: Ids) -> Opened:
        raise NOT_YET

    def get(self, response_id: str) -> dict:
        """A stored response (GET /v1/responses/{id}); a 404 in OpenAI's shape if unknown."""
        raise NOT_YET

    def delete(self, response_id: str) -> dict:
        """Forget a stored response (DELETE /v1/responses/{id})."""
        raise NOT_YET
