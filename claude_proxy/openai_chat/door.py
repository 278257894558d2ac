"""
The Chat Completions front door: its routes (POST /v1/chat/completions, and
OpenAI's model list), its error shape, a wire request in and the neutral
request and its encoder out.
"""

from __future__ import annotations

from attrs import frozen

from claude_proxy.door import ErrorAnswer, Header, Ids, Opened, Route, Serve
from claude_proxy.errors import APIError
from claude_proxy.models import model_list, model_object, resolve
from claude_proxy.openai_chat.encode import ChatEncoder
from claude_proxy.openai_chat.errors import openai_error
from claude_proxy.openai_chat.parse import ignored_params, include_usage, parse_chat_request

PATH = b"/v1/chat/completions"


@frozen
class ChatDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
    request_id_header: bytes | None = None  # OpenAI's is the daemon's own X-Request-Id

    def open(self, body: dict, ids: Ids) -> Opened:
        request = parse_chat_request(body, self.image_urls)
        encoder = ChatEncoder(f"chatcmpl-{ids.request_id}", request.model.id, ids.created,
                              include_usage(body))
        return Opened(request, encoder, ignored_params(body))

    def routes(self, serve: Serve) -> tuple[Route, ...]:
        return (
            Route(PATH.decode(), ("POST",), "chat_completions",
                  lambda request: serve(request, self), api="Chat"),
            Route("/v1/models", ("GET",), "models", lambda request: model_list()),
            Route("/v1/models/<path:model_id>", ("GET",), "model",
                  lambda request, model_id: model_object(resolve(model_id).id)),
        )

    def speaks(self, path: bytes, header: Header) -> bool:
        return path == PATH

    def error(self, error: APIError) -> ErrorAnswer:
        return ErrorAnswer(*openai_error(error))
