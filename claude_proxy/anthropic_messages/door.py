"""The Messages front door: a wire request in, the neutral request and its encoder out."""

from __future__ import annotations

from attrs import field, frozen
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from claude_proxy.anthropic_messages import models
from claude_proxy.anthropic_messages.count import estimate
from claude_proxy.anthropic_messages.encode import MessagesEncoder
from claude_proxy.anthropic_messages.parse import Parsed, ignored_params, parse_messages_request
from claude_proxy.door import Ids, Opened

log = Logger()


@frozen
class MessagesDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
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

    def open(self, body: dict, http: IRequest, ids: Ids) -> Opened:
        request = self._parse(body).request
        encoder = MessagesEncoder(f"msg_{ids.request_id}", request.model.id)
        return Opened(request, encoder, ignored_params(body))

    def count_tokens(self, body: dict) -> dict:
        """An estimate of a request's input tokens; never runs the CLI."""
        return {"input_tokens": estimate(self._parse(body, counting=True).request)}

    def models(self) -> dict:
        """GET /v1/models in Anthropic's list shape."""
        return models.model_list()

    def model(self, model_id: str) -> dict:
        """GET /v1/models/{id} in Anthropic's shape."""
        return models.model(model_id)
