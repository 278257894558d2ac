"""
The Responses front door: its routes (POST /v1/responses; GET and DELETE of a
stored response), OpenAI's error shape, a wire request in and the neutral
request and its encoder out; the store.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import Factory, define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from claude_proxy.answer import Answer
from claude_proxy.conversation import Block, text_block
from claude_proxy.door import ErrorAnswer, Header, Ids, Opened, Route, Serve
from claude_proxy.errors import APIError
from claude_proxy.openai_chat.errors import openai_error
from claude_proxy.openai_responses.encode import ResponsesEncoder, Shape, deleted
from claude_proxy.openai_responses.parse import Context, Parsed, ignored_params, \
    parse_responses_request
from claude_proxy.openai_responses.store import ResponseStore
from claude_proxy.tools import anthropic_tool_id, model_tool_name, openai_call_id

log = Logger()

PATH = b"/v1/responses"


def not_found(response_id: str, param: str | None = None) -> APIError:
    what = "Previous response" if param else "Response"
    return APIError(404, f"{what} with id '{response_id}' not found.", "invalid_request_error",
                    "previous_response_not_found" if param else "response_not_found", param)


def echo(body: dict, parsed: Parsed) -> dict[str, Any]:
    """The request's settings as the response object repeats them (OpenAI's defaults otherwise)."""
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort") if parsed.request.effort else None,
                      "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier") or "default",
        "store": parsed.store,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }


def assistant_blocks(answer: Answer) -> tuple[Block, ...]:
    """The answer as the assistant turn a continuing response replays."""
    blocks: list[Block] = []
    for part in answer.parts:
        if part.kind == "thinking" and part.signature:
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
        elif part.kind == "text" and part.text:
            blocks.append(text_block(part.text))
        elif part.kind == "tool_use":
            try:
                arguments = json.loads(part.arguments or "{}")
            except ValueError:  # cut short by the token limit
                arguments = {}
            blocks.append({"type": "tool_use",
                           "id": anthropic_tool_id(openai_call_id(part.call_id)),
                           "name": model_tool_name(part.name),
                           "input": arguments if isinstance(arguments, dict) else {}})
    return tuple(blocks)


@define
class ResponsesDoor:
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch
    reactor: IReactorTime = field(kw_only=True)  # for the store's time to live
    store: ResponseStore = field(
        default=Factory(lambda self: ResponseStore(self.reactor), takes_self=True), kw_only=True)
    _told: set[str] = field(factory=set, init=False)  # tool kinds already logged as left out
    request_id_header: bytes | None = field(default=None, init=False)  # X-Request-Id is OpenAI's

    def open(self, body: dict, ids: Ids) -> Opened:
        previous = self._previous(body.get("previous_response_id"))
        parsed = parse_responses_request(body, previous, self.image_urls)
        for kind in parsed.left_out:
            if kind not in self._told:
                self._told.add(kind)
                log.info("Responses: tools of type {kind} are not offered to the model "
                         "(the proxy cannot serve them); logged once", kind=kind)
        shape = Shape(f"resp_{ids.request_id}", parsed.request.model.id, ids.created,
                      echo(body, parsed), parsed.names, parsed.summary, parsed.encrypted)
        store_response = None
        if parsed.store:
            def store_response(response: dict, answer: Answer) -> None:
                context = Context(parsed.context.system,
                                  parsed.context.turns + (("assistant", assistant_blocks(answer)),))
                self.store.put(response, context)
        return Opened(parsed.request, ResponsesEncoder(shape, store_response), ignored_params(body))

    def routes(self, serve: Serve) -> tuple[Route, ...]:
        return (
            Route(PATH.decode(), ("POST",), "responses",
                  lambda request: serve(request, self), api="Responses"),
            Route("/v1/responses/<response_id>", ("GET",), "response",
                  lambda request, response_id: self.get(response_id)),
            Route("/v1/responses/<response_id>", ("DELETE",), "response",
                  lambda request, response_id: self.delete(response_id)),
        )

    def speaks(self, path: bytes, header: Header) -> bool:
        return path == PATH or path.startswith(PATH + b"/")

    def error(self, error: APIError) -> ErrorAnswer:
        return ErrorAnswer(*openai_error(error))

    def _previous(self, response_id: object) -> Context | None:
        if response_id is None:
            return None
        if not isinstance(response_id, str):
            raise APIError(400, "previous_response_id must be a string.",
                           param="previous_response_id")
        stored = self.store.get(response_id)
        if stored is None:
            raise not_found(response_id, "previous_response_id")
        return stored.context

    def get(self, response_id: str) -> dict:
        """A stored response (GET /v1/responses/{id}); a 404 in OpenAI's shape if unknown."""
        stored = self.store.get(response_id)
        if stored is None:
            raise not_found(response_id)
        return stored.response

    def delete(self, response_id: str) -> dict:
        """Forget a stored response (DELETE /v1/responses/{id})."""
        if not self.store.delete(response_id):
            raise not_found(response_id)
        return deleted(response_id)
