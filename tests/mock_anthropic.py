"""An in-process mock of the Anthropic Messages API for driving the real Claude Code CLI.

Point the CLI at it with ``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``. The CLI's only traffic is
``POST /v1/messages?beta=true``: streaming first, and after a failed stream one non-streaming retry,
so every scenario answers both forms.

The behaviour of a request is chosen by a directive in the text of the last user message::

    [[mock:NAME key=value key="value with spaces" ...]]

or, for every request, by ``MockAnthropic.force`` (the same grammar without the brackets, e.g.
``"error status=401 type=authentication_error"``). Scenarios:

- no directive: ``MOCK REPLY to: <first 60 chars of the last user text block>`` in ~7-char deltas.
- ``error status=N [type=T] [message=M] [retry_after=S] [should_retry=true|false]
  [unified_status=S] [unified_reset=UNIX] [unified_claim=C] [header.NAME=V ...]``: an Anthropic
  error answer. ``unified_reset``/``unified_claim`` imply ``unified_status=rejected``.
- ``deltas [n=100] [size=7]``: n text deltas of ``size`` characters (letters a..z cycling).
- ``stall``: message_start, then nothing until the client goes away (non-streaming: no answer at all).
- ``slow [delay=0.05]``: the default reply with ``delay`` seconds between SSE events.
- ``echo_system``: the reply text is the request's system prompt (text blocks joined by newlines).
- ``midstream_error [calls=JSON]``: a few deltas, then an ``overloaded_error`` SSE error event;
  the non-streaming retry is answered with the default reply, or with those tool calls.
- ``tools calls=JSON [text=T]``: tool_use blocks (JSON list of {name, input}; a name matches an
  offered tool by itself or after an ``mcp__server__`` prefix), after optional text.
- ``text pieces=JSON``: the reply in exactly these deltas.
- ``thinking [thought=T]``: a thinking block, then the default reply.
- ``steps calls=JSON [thinking=1]``: a tool loop (JSON list of steps, each a list of calls as for
  ``tools``): the n-th request since the directive's user message (counted by the assistant turns
  after it, so it holds across the tool results that follow) makes step n's calls; once they are
  done, the default reply. With ``thinking=1`` every answer starts with a signed thinking block.
  (``]]`` ends a directive: write the nested lists' closing brackets apart, ``] ]``.)
- ``MockAnthropic.account_headers`` adds headers to every answer for an account (by its bearer
  token or API key, ``"*"`` for all), e.g. the unified rate-limit headers
  ``anthropic-ratelimit-unified-5h-utilization``.
- ``max_tokens``: the default reply with stop_reason ``max_tokens``. The CLI then sends its own
  "Output token limit hit..." user turn (no directive, so the default reply); when forced, it gives
  up after 3 such turns with an error result.

Run standalone with ``python -m tests.mock_anthropic --port 0``; it prints ``LISTENING <port>``
(``--header NAME=VALUE`` for every answer, ``--record FILE`` to log the requests).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from attrs import asdict, define, field, frozen
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

log = Logger()

MESSAGES_PATH = b"/v1/messages"

# Values as the real API reports them for a small cached prompt; the CLI sums them into `result.usage`.
START_USAGE = {
    "input_tokens": 11,
    "cache_creation_input_tokens": 3,
    "cache_read_input_tokens": 5,
    "output_tokens": 1,
}
OUTPUT_TOKENS = 7
DELTA_SIZE = 7
REPLY_PREFIX = "MOCK REPLY to: "
REPLY_QUOTE_CHARS = 60
MIDSTREAM_PARTIAL_TEXT = "PARTIAL BEFORE ERROR "
THINKING_TEXT = "MOCK THINKING: weighing the question."
TOOL_JSON_PIECE = 9  # characters of a tool's input JSON per input_json_delta

DIRECTIVE = re.compile(r"\[\[mock:(?P<name>\w+)(?P<args>.*?)\]\]", re.DOTALL)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

# Directive keys of the error scenario that map straight onto a response header.
ERROR_HEADER_KEYS = {
    "retry_after": "retry-after",
    "should_retry": "x-should-retry",
    "unified_status": "anthropic-ratelimit-unified-status",
    "unified_reset": "anthropic-ratelimit-unified-reset",
    "unified_claim": "anthropic-ratelimit-unified-representative-claim",
}


class DirectiveError(ValueError):
    """A directive that cannot be carried out; answered with a 400 so typos in tests are loud."""


@frozen
class RecordedRequest:
    """One request as the mock received it."""

    path: str  # including the query string, e.g. "/v1/messages?beta=true"
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None when the body was not JSON

    @property
    def session_id(self) -> str | None:
        """The Claude Code session that sent it (CLI 2.1.330 names it in metadata.user_id's JSON)."""
        try:
            return json.loads(self.body["metadata"]["user_id"])["session_id"]
        except (KeyError, TypeError, ValueError):
            return None


@frozen
class Directive:
    name: str
    params: Mapping[str, str]

    @classmethod
    def parse(cls, name: str, args: str) -> Directive:
        try:
            words = shlex.split(args)
        except ValueError as e:
            raise DirectiveError(f"bad mock directive arguments {args!r}: {e}") from None
        params = {}
        for word in words:
            key, sep, value = word.partition("=")
            if not sep:
                raise DirectiveError(f"mock directive argument {word!r} is not key=value")
            params[key] = value
        return cls(name, params)

    @classmethod
    def from_force(cls, text: str) -> Directive:
        name, _, args = text.strip().partition(" ")
        return cls.parse(name, args)

    def number(self, key: str, default: float) -> float:
        try:
            return float(self.params.get(key, default))
        except ValueError:
            raise DirectiveError(f"mock:{self.name} {key}= wants a number") from None

    def count(self, key: str, default: int) -> int:
        value = self.number(key, default)
        if value != int(value) or value < 0:
            raise DirectiveError(f"mock:{self.name} {key}= wants a whole number")
        return int(value)


def block_texts(content: Any) -> list[str]:
    """The texts of a message's content, which is either a string or a list of blocks."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return []


def last_user_texts(body: Any) -> list[str]:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return block_texts(message.get("content"))
    return []


def system_text(body: Any) -> str:
    return "\n".join(block_texts(body.get("system")))


def default_reply(texts: list[str]) -> str:
    quoted = " ".join(DIRECTIVE.sub(" ", texts[-1]).split()) if texts else ""
    return REPLY_PREFIX + quoted[:REPLY_QUOTE_CHARS]


def split_text(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_blocks(text: str) -> list[Block]:
    return [Block("text", split_text(text, DELTA_SIZE))] if text else []


def sse(event: dict[str, Any]) -> bytes:
    # The CLI ignores events without an `event:` line, so both lines are always written.
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


@frozen
class Block:
    """One content block of a reply, streamed as its deltas."""

    kind: str  # "text", "tool_use" or "thinking"
    pieces: list[str]  # text deltas, partial JSON of a tool's input, or thinking deltas
    tool_id: str = ""
    tool_name: str = ""

    def start(self) -> dict[str, Any]:
        if self.kind == "tool_use":
            return {"type": "tool_use", "id": self.tool_id, "name": self.tool_name, "input": {}}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": "", "signature": ""}
        return {"type": "text", "text": ""}

    def deltas(self) -> list[dict[str, Any]]:
        if self.kind == "tool_use":
            return [{"type": "input_json_delta", "partial_json": p} for p in self.pieces]
        if self.kind == "thinking":
            return [{"type": "thinking_delta", "thinking": p} for p in self.pieces] + [
                {"type": "signature_delta", "signature": "bW9jay1zaWduYXR1cmU="}
            ]
        return [{"type": "text_delta", "text": p} for p in self.pieces]

    def complete(self) -> dict[str, Any]:
        whole = "".join(self.pieces)
        if self.kind == "tool_use":
            return self.start() | {"input": json.loads(whole) if whole else {}}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": whole, "signature": "bW9jay1zaWduYXR1cmU="}
        return {"type": "text", "text": whole}


@frozen
class Reply:
    """A successful answer, renderable as an SSE stream or as one Message object."""

    message_id: str
    model: str
    blocks: list[Block]
    stop_reason: str = "end_turn"

    def message(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": dict(START_USAGE),
        }

    def full_message(self) -> dict[str, Any]:
        return self.message() | {
            "content": [block.complete() for block in self.blocks],
            "stop_reason": self.stop_reason,
            "usage": START_USAGE | {"output_tokens": OUTPUT_TOKENS},
        }

    def start_events(self) -> list[bytes]:
        return [sse({"type": "message_start", "message": self.message()})]

    def block_events(self) -> list[bytes]:
        events = []
        for index, block in enumerate(self.blocks):
            events.append(sse({"type": "content_block_start", "index": index, "content_block": block.start()}))
            events.extend(
                sse({"type": "content_block_delta", "index": index, "delta": delta}) for delta in block.deltas()
            )
            events.append(sse({"type": "content_block_stop", "index": index}))
        return events

    def end_events(self) -> list[bytes]:
        return [
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": OUTPUT_TOKENS},
                }
            ),
            sse({"type": "message_stop"}),
        ]


@define
class SseStream:
    """Writes SSE events to one request, optionally paced, and notices the client going away."""

    mock: MockAnthropic
    request: Request
    events: list[bytes]
    delay: float = 0.0
    finish: bool = True  # False keeps the connection open after the last event (the stall scenario)
    _pending: IDelayedCall | None = field(default=None, init=False)
    _gone: bool = field(default=False, init=False)

    def start(self) -> None:
        self.mock.open_streams += 1
        self.request.notifyFinish().addBoth(self._closed)
        if self.delay:
            self._write_next()
        else:
            # One write: a 20000-delta stream is a few MB, and per-event writes would dominate the time.
            self._write(b"".join(self.events))
            self._done()

    def _write_next(self) -> None:
        self._pending = None
        self._write(self.events.pop(0))
        if self.events:
            self._pending = self.mock.reactor.callLater(self.delay, self._write_next)
        else:
            self._done()

    def _write(self, data: bytes) -> None:
        if data and not self._gone:
            self.request.write(data)

    def _done(self) -> None:
        if self.finish and not self._gone:
            self.request.finish()

    def _closed(self, _: object) -> None:
        # Fires once, on a normal finish or on the client disconnecting (e.g. a killed CLI).
        self._gone = True
        self.mock.open_streams -= 1
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


@define
class MockAnthropic:
    """The mock API: records every request and answers /v1/messages according to its directive."""

    reactor: Any  # IReactorTime for paced streams, IReactorTCP for listen()
    requests: list[RecordedRequest] = field(factory=list)
    force: str | None = None  # a directive (without brackets) that overrides the prompt's
    record_to: Any = None  # a text file: each request is also appended to it as one JSON line
    # Headers for every answer to an account, by its OAuth bearer token (or API key); "*" for
    # any account: how the tests play the API's unified rate-limit headers (quota windows).
    account_headers: dict[str, dict[str, str]] = field(factory=dict)
    # A directive forced for one account (by its token), like `force` for all.
    account_force: dict[str, str] = field(factory=dict)
    open_streams: int = field(default=0, init=False)
    _counter: int = field(default=0, init=False)
    _listening: IListeningPort | None = field(default=None, init=False)

    def reset(self) -> None:
        """Forget recorded requests and any forced scenario (open streams are live state, kept)."""
        self.requests.clear()
        self.force = None

    def resource(self) -> Resource:
        return _Site(self)

    def listen(self, port: int = 0, interface: str = "127.0.0.1") -> IListeningPort:
        self._listening = self.reactor.listenTCP(port, Site(self.resource()), interface=interface)
        return self._listening

    @property
    def base_url(self) -> str:
        assert self._listening is not None, "listen() first"
        address = self._listening.getHost()
        return f"http://{address.host}:{address.port}"

    def stop(self) -> Deferred[None]:
        """Stop listening; open connections are left to their clients."""
        listening, self._listening = self._listening, None
        return maybeDeferred(listening.stopListening) if listening is not None else succeed(None)

    @staticmethod
    def token_of(headers: Mapping[str, str]) -> str:
        """Which account sent a request: its OAuth bearer token, or its API key."""
        auth = headers.get("authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else headers.get("x-api-key", "")

    def headers_for(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The account headers for a request, told apart by its credentials."""
        token = self.token_of(headers)
        return {**self.account_headers.get("*", {}), **self.account_headers.get(token, {})}

    def directive_for(self, body: Any, token: str = "") -> Directive | None:
        if self.force:
            return Directive.from_force(self.force)
        if token in self.account_force:
            return Directive.from_force(self.account_force[token])
        for text in last_user_texts(body):
            match = DIRECTIVE.search(text)
            if match:
                return Directive.parse(match["name"], match["args"])
        return self._steps_under_way(body)

    @staticmethod
    def _steps_under_way(body: Any) -> Directive | None:
        """A `steps` directive of an earlier user message, and how far its loop has come."""
        done = 0
        for message in reversed(body.get("messages") or []):
            if message.get("role") == "assistant":
                done += 1
            elif message.get("role") == "user":
                for text in block_texts(message.get("content")):
                    match = DIRECTIVE.search(text)
                    if match and match["name"] == "steps":
                        directive = Directive.parse(match["name"], match["args"])
                        return Directive(directive.name, {**directive.params, "_step": str(done)})
        return None

    def render(self, request: Request) -> bytes | int:
        raw = request.content.read() if request.content is not None else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {
            name.decode().lower(): ", ".join(v.decode() for v in values)
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        recorded = RecordedRequest(path=request.uri.decode(), headers=headers, body=body)
        self.requests.append(recorded)
        if self.record_to is not None:
            self.record_to.write(json.dumps(asdict(recorded)) + "\n")
            self.record_to.flush()
        log.debug("{method} {uri}", method=request.method.decode(), uri=request.uri.decode())

        if request.method != b"POST" or request.path != MESSAGES_PATH:
            return error_response(request, 404, "not_found_error", f"mock: no route {request.path.decode()}")
        if not isinstance(body, dict):
            return error_response(request, 400, "invalid_request_error", "mock: body is not a JSON object")

        self._counter += 1
        request.setHeader(b"request-id", f"req_mock_{self._counter:04d}".encode())
        for name, value in self.headers_for(headers).items():
            request.setHeader(name.encode(), value.encode())
        try:
            return self._answer(request, body, self.directive_for(body, self.token_of(headers)))
        except DirectiveError as e:
            return error_response(request, 400, "invalid_request_error", str(e))

    def _answer(self, request: Request, body: dict[str, Any], directive: Directive | None) -> bytes | int:
        streaming = bool(body.get("stream"))
        name = directive.name if directive else "default"
        log.info("request {n}: {name}, stream={streaming}", n=self._counter, name=name, streaming=streaming)
        texts = last_user_texts(body)

        def reply(deltas: list[str], stop_reason: str = "end_turn", before: list[Block] = ()) -> Reply:
            blocks = [*before, Block("text", deltas)] if deltas else list(before)
            return Reply(f"msg_mock_{self._counter:04d}", body.get("model", "unknown"), blocks, stop_reason)

        default_deltas = split_text(default_reply(texts), DELTA_SIZE)
        default = reply(default_deltas)

        if directive is None:
            return self._send(request, streaming, default)
        if directive.name == "error":
            return self._error(request, directive)
        if directive.name == "deltas":
            n, size = directive.count("n", 100), directive.count("size", DELTA_SIZE)
            return self._send(request, streaming, reply([chr(97 + i % 26) * size for i in range(n)]))
        if directive.name == "text":
            pieces = json.loads(directive.params.get("pieces", "[]"))
            return self._send(request, streaming, reply(pieces))
        if directive.name == "stall":
            if streaming:
                return self._stream(request, default.start_events(), finish=False)
            return self._hold(request)
        if directive.name == "slow":
            return self._send(request, streaming, default, delay=directive.number("delay", 0.05))
        if directive.name == "echo_system":
            return self._send(request, streaming, reply(split_text(system_text(body), DELTA_SIZE)))
        if directive.name == "midstream_error":
            if not streaming and "calls" in directive.params:  # the retry calls tools
                return self._send(request, False, reply([], "tool_use", self._tool_blocks(body, directive)))
            if not streaming:
                return self._send(request, False, default)
            partial = reply(split_text(MIDSTREAM_PARTIAL_TEXT, DELTA_SIZE))
            error = sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            return self._stream(request, [*partial.start_events(), *partial.block_events()[:-1], error])
        if directive.name == "max_tokens":
            return self._send(request, streaming, reply(default_deltas, "max_tokens"))
        if directive.name == "tools":
            calls = self._tool_blocks(body, directive)
            text = directive.params.get("text", "")
            return self._send(request, streaming, reply([], "tool_use", [*text_blocks(text), *calls]))
        if directive.name == "steps":
            try:
                steps = json.loads(directive.params["calls"])
            except (KeyError, ValueError):
                raise DirectiveError("mock:steps needs calls=JSON list of steps") from None
            step = int(directive.params.get("_step", "0"))
            think = [Block("thinking", split_text(THINKING_TEXT, DELTA_SIZE))] \
                if directive.params.get("thinking") else []
            if step < len(steps):
                return self._send(request, streaming,
                                  reply([], "tool_use", [*think, *self._calls(body, steps[step])]))
            return self._send(request, streaming, reply(default_deltas, before=think))
        if directive.name == "thinking":
            thought = split_text(directive.params.get("thought", THINKING_TEXT), DELTA_SIZE)
            return self._send(request, streaming, reply(default_deltas, before=[Block("thinking", thought)]))
        raise DirectiveError(f"unknown mock directive {directive.name!r}")

    def _tool_blocks(self, body: dict[str, Any], directive: Directive) -> list[Block]:
        try:
            calls = json.loads(directive.params["calls"])
        except (KeyError, ValueError):
            raise DirectiveError("mock:tools needs calls=JSON list of {name, input}") from None
        return self._calls(body, calls)

    def _calls(self, body: dict[str, Any], calls: list[dict[str, Any]]) -> list[Block]:
        # Names are matched against the offered tools, so a call to a tool the model never saw fails loudly.
        offered = [tool.get("name", "") for tool in body.get("tools") or []]
        blocks = []
        for i, call in enumerate(calls):
            matches = [name for name in offered if name == call["name"] or name.endswith("__" + call["name"])]
            if not matches:
                raise DirectiveError(f"mock:tools: no offered tool named {call['name']!r} (offered: {offered})")
            arguments = json.dumps(call.get("input", {}))
            tool_id = f"toolu_mock_{self._counter:04d}_{i}"
            blocks.append(Block("tool_use", split_text(arguments, TOOL_JSON_PIECE), tool_id, matches[0]))
        return blocks

    def _send(self, request: Request, streaming: bool, reply: Reply, delay: float = 0.0) -> bytes | int:
        if not streaming:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(reply.full_message()).encode()
        events = [*reply.start_events(), *reply.block_events(), *reply.end_events()]
        return self._stream(request, events, delay=delay)

    def _stream(self, request: Request, events: list[bytes], delay: float = 0.0, finish: bool = True) -> int:
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        SseStream(self, request, events, delay=delay, finish=finish).start()
        return NOT_DONE_YET

    def _hold(self, request: Request) -> int:
        # A non-streaming stall: never answer, but keep the open-connection count honest.
        self.open_streams += 1
        request.notifyFinish().addBoth(self._release)
        return NOT_DONE_YET

    def _release(self, _: object) -> None:
        self.open_streams -= 1

    def _error(self, request: Request, directive: Directive) -> bytes:
        if "status" not in directive.params:
            raise DirectiveError("mock:error needs status=")
        status = directive.count("status", 0)
        error_type = directive.params.get("type", ERROR_TYPES.get(status, "api_error"))
        params = dict(directive.params)
        if ("unified_reset" in params or "unified_claim" in params) and "unified_status" not in params:
            params["unified_status"] = "rejected"
        for key, value in params.items():
            if key in ERROR_HEADER_KEYS:
                request.setHeader(ERROR_HEADER_KEYS[key].encode(), value.encode())
            elif key.startswith("header."):
                request.setHeader(key.removeprefix("header.").encode(), value.encode())
            elif key not in ("status", "type", "message"):
                raise DirectiveError(f"mock:error does not know {key}=")
        return error_response(request, status, error_type, params.get("message", f"mock {error_type}"))


def error_response(request: Request, status: int, error_type: str, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


class _Site(Resource):
    """The whole site as one leaf: routing is done in MockAnthropic.render so every request is recorded."""

    isLeaf = True

    def __init__(self, mock: MockAnthropic) -> None:
        super().__init__()
        self.mock = mock

    def render(self, request: Request) -> bytes | int:
        return self.mock.render(request)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--record", metavar="FILE", help="append every request to FILE as a JSON line")
    parser.add_argument("--header", metavar="NAME=VALUE", action="append", default=[],
                        help="a header on every answer (account_headers['*']), e.g. the quota's")
    args = parser.parse_args(argv)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    # stdout carries only the LISTENING line that scripts parse; logs go to stderr.
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    record_to = open(args.record, "a") if args.record else None
    headers = dict(pair.split("=", 1) for pair in args.header)
    listening = MockAnthropic(reactor, record_to=record_to,
                              account_headers={"*": headers}).listen(args.port)
    print(f"LISTENING {listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
