"""
The HTTP API: a class-based Klein app serving /health, /v1/models and
/v1/chat/completions, with every error in OpenAI's shape.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from attrs import define
from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from claude_proxy.answer import Answer
from claude_proxy.chat import parse_body, parse_chat_request
from claude_proxy.cli import CLIProbe
from claude_proxy.errors import APIError
from claude_proxy.models import model_list, model_object, resolve
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.runner import Runner
from claude_proxy.writers import HEARTBEAT_SECONDS, HOLD_HEADERS_SECONDS, BufferedWriter, StreamWriter

log = Logger()


def _json(request: IRequest, status: int, obj: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(obj).encode("utf-8")


@define(slots=False)
class ProxyAPI:
    runner: Runner
    settings: CLISettings
    probe: CLIProbe
    environ: Mapping[str, str]
    clock: Any  # IReactorTime
    hold: float = HOLD_HEADERS_SECONDS
    heartbeat: float = HEARTBEAT_SECONDS
    image_urls: bool = False  # pass http(s) image URLs on for the API to fetch

    app = Klein()

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        health = await self.probe.check()
        body = {
            "status": "ok" if health.ok else "unavailable",
            "cli": {"path": health.path, "version": health.version, "error": health.error},
            "in_flight": self.runner.in_flight,
            "queued": self.runner.waiting,
        }
        return _json(request, 200 if health.ok else 503, body)

    @app.route("/v1/models", methods=["GET"])
    def models(self, request: IRequest) -> bytes:
        return _json(request, 200, model_list())

    @app.route("/v1/models/<path:model_id>", methods=["GET"])
    def model(self, request: IRequest, model_id: str) -> bytes:
        return _json(request, 200, model_object(resolve(model_id).id))

    @app.route("/v1/chat/completions", methods=["POST"])
    async def chat_completions(self, request: IRequest) -> bytes | None:
        started = self.clock.seconds()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = "-"
        status = 200
        writer: BufferedWriter | StreamWriter | None = None
        try:
            chat = parse_chat_request(parse_body(request.content.read()), self.image_urls)
            model = chat.model.id
            if chat.ignored:
                log.debug("{request_id}: ignored parameters: {params}",
                          request_id=completion_id, params=", ".join(chat.ignored))
            plan = build_plan(chat, self.settings, self.environ)
            created = int(self.clock.seconds())
            answer = Answer(chat.stop, structured=chat.response_format is not None)
            if chat.stream:
                writer = StreamWriter(request, self.clock, completion_id, model, created,
                                      chat.include_usage, self.hold, self.heartbeat,
                                      answer=answer)
            else:
                writer = BufferedWriter(completion_id, model, created, answer=answer)
            writer.begin(self.runner.submit(plan, writer))
            body = await writer.done
            return None if body is None else _json(request, 200, body)
        except APIError as e:
            status = e.status
            raise
        except CancelledError:
            status = 499  # the client went away
            raise
        finally:
            usage = writer.usage if writer is not None else None
            if writer is not None and writer.error is not None:
                status = writer.error.status  # also when it went out as an SSE event
            log.info(
                "{request_id} {model} {status} {duration_ms}ms "
                "prompt_tokens={prompt_tokens} completion_tokens={completion_tokens}",
                request_id=completion_id, model=model, status=status,
                duration_ms=round((self.clock.seconds() - started) * 1000),
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.output_tokens if usage else 0,
            )

    @app.handle_errors(APIError)
    def api_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        if error.retry_after is not None:
            request.setHeader(b"retry-after", str(error.retry_after).encode())
        return _json(request, error.status, error.to_json())

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return _json(request, 404, APIError(
            404, f"Unknown path: {path}", code="not_found").to_json())

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode("ascii", "replace")
        return _json(request, 405, APIError(
            405, f"Method {method} is not allowed here.", code="method_not_allowed").to_json())

    @app.handle_errors(Exception)
    def internal_error(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Unhandled error in {path}", failure, path=request.path)
        return _json(request, 500, APIError(
            500, "Internal error in the proxy; see its log.", "server_error",
            "internal_error").to_json())
