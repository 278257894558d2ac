"""
The Messages front door: its routes (POST /v1/messages, count_tokens, and the
model list for clients that send anthropic-version), Anthropic's error shape
for every request that speaks it, a wire request in and the neutral request
and its encoder out.
"""

from __future__ import annotations

from attrs import field, frozen
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from claude_proxy.anthropic_messages import models
from claude_proxy.anthropic_messages.count import estimate
from claude_proxy.anthropic_messages.encode import MessagesEncoder
from claude_proxy.anthropic_messages.errors import anthropic_error, unified_headers
from claude_proxy.anthropic_messages.parse import Parsed, ignored_params, parse_messages_request
from claude_proxy.body import parse_body
from claude_proxy.door import ErrorAnswer, Header, Ids, Opened, Route, Serve
from claude_proxy.errors import APIError

log = Logger()

PATH = b"/v1/messages"
VERSION = b"anthropic-version"  # the anthropic SDK and Claude Code send it; OpenAI clients do not


def sent_by_its_sdk(request: IRequest) -> bool:
    return request.getHeader(VERSION) is not None


@frozen
class MessagesDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
    # Anthropic's name for it: the anthropic SDK's `_request_id`, shown by Claude Code.
    request_id_header: bytes | None = b"request-id"
    # Kinds of server tools (web_search_20250305, bash_20250124...) already logged as left out.
    _logged: set = field(factory=set, init=False)

    def _parse(self, body: dict, counting: bool = False) -> Parsed:
        parsed = parse_messages_request(body, self.image_urls, counting)
        for kind in parsed.left_out:
            if kind not in self._logged:
                self._logged.add(kind)
                log.info("Server tools of type {kind} are left out: this proxy cannot run them "
                         "(logged once per type)", kind=kind)
        return parsed

    def open(self, body: dict, ids: Ids) -> Opened:
        request = self._parse(body).request
        encoder = MessagesEncoder(f"msg_{ids.request_id}", request.model.id)
        return Opened(request, encoder, ignored_params(body))

    def routes(self, serve: Serve) -> tuple[Route, ...]:
        return (
            Route(PATH.decode(), ("POST",), "messages",
                  lambda request: serve(request, self), api="Messages"),
            Route("/v1/messages/count_tokens", ("POST",), "count_tokens",
                  lambda request: self.count_tokens(parse_body(request.content.read()))),
            Route("/v1/models", ("GET",), "models", lambda request: self.models(),
                  claims=sent_by_its_sdk),
            Route("/v1/models/<path:model_id>", ("GET",), "model",
                  lambda request, model_id: self.model(model_id), claims=sent_by_its_sdk),
        )

    def speaks(self, path: bytes, header: Header) -> bool:
        """Its paths, or any request its SDK sent."""
        return path == PATH or path.startswith(PATH + b"/") or header(VERSION) is not None

    def error(self, error: APIError) -> ErrorAnswer:
        return ErrorAnswer(*anthropic_error(error), unified_headers(error))

    def count_tokens(self, body: dict) -> dict:
        """An estimate of a request's input tokens; never runs the CLI."""
        return {"input_tokens": estimate(self._parse(body, counting=True).request)}

    def models(self) -> dict:
        """GET /v1/models in Anthropic's list shape."""
        return models.model_list()

    def model(self, model_id: str) -> dict:
        """GET /v1/models/{id} in Anthropic's shape."""
        return models.model(model_id)
