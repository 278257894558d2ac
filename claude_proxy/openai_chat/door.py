"""The Chat Completions front door: a wire request in, the neutral request and its encoder out."""

from __future__ import annotations

from attrs import frozen
from twisted.web.iweb import IRequest

from claude_proxy.door import Ids, Opened
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.openai_chat.parse import ignored_params, include_usage, parse_chat_request


@frozen
class ChatDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch

    def open(self, body: dict, http: IRequest, ids: Ids) -> Opened:
        request = parse_chat_request(body, self.image_urls)
        encoder = ChatEncoder(f"chatcmpl-{ids.request_id}", request.model.id, ids.created,
                              include_usage(body))
        return Opened(request, encoder, ignored_params(body))
