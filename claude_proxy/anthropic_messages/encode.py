"""
The neutral answer → Anthropic's `message` object, or its event stream:
message_start, ping, content_block_start / _delta / _stop for each block in
order, message_delta, message_stop (and `error` for a failure after the
stream began). Pure.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, field

from claude_proxy.answer import (
    Answer, CallArgs, CallStart, Out, Part, SignatureOut, TextOut, ThinkingOut,
)
from claude_proxy.anthropic_messages.errors import anthropic_error
from claude_proxy.errors import APIError
from claude_proxy.events import Usage
from claude_proxy.sse import dumps, fill, frame, template

PING = frame(b'{"type":"ping"}', "ping")
MESSAGE_STOP = frame(b'{"type":"message_stop"}', "message_stop")


def usage_json(usage: Usage) -> dict[str, int]:
    # Anthropic's input_tokens leaves the cached tokens out, as the API reported them.
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "output_tokens": usage.output_tokens,
    }


def tool_input(arguments: str) -> dict:
    """A call's streamed JSON arguments as the object they make ({} if cut short)."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def content_block(part: Part) -> dict[str, Any]:
    if part.kind == "thinking":
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    if part.kind == "tool_use":
        return {"type": "tool_use", "id": part.call_id, "name": part.name,
                "input": tool_input(part.arguments)}
    return {"type": "text", "text": part.text}


def content(answer: Answer) -> list[dict[str, Any]]:
    return [content_block(p) for p in answer.parts if p.kind != "text" or p.text]


@define
class MessagesEncoder:
    message_id: str
    model: str  # as the client asked for it
    _index: int = field(default=-1, init=False)  # the latest block's (-1: none yet)
    _kind: str = field(default="", init=False)  # the open block's kind ("": none open)
    _sealed: bool = field(default=False, init=False)  # the open thinking block has its signature
    _text_frame: tuple[bytes, bytes] | None = field(default=None, init=False)

    def message(self, answer: Answer, blocks: list, stop_reason: str | None,
                usage: Usage) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": answer.stop_sequence if stop_reason else None,
            "usage": usage_json(usage),
        }

    def body(self, answer: Answer) -> dict:
        return self.message(answer, content(answer), answer.finish or "end_turn", answer.usage)

    def opening(self, answer: Answer) -> bytes:
        start = {"type": "message_start",
                 "message": self.message(answer, [], None, answer.start_usage)}
        return frame(dumps(start), "message_start") + PING

    def _event(self, event: dict) -> bytes:
        return frame(dumps(event), event["type"])

    def _delta(self, delta: dict) -> bytes:
        return self._event({"type": "content_block_delta", "index": self._index, "delta": delta})

    def _open(self, kind: str, block: dict) -> bytes:
        """Close the open block, if any, and start the next one."""
        data = self._close()
        self._index += 1
        self._kind, self._sealed = kind, False
        return data + self._event({"type": "content_block_start", "index": self._index,
                                   "content_block": block})

    def _close(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = ""
        self._text_frame = None
        return self._event({"type": "content_block_stop", "index": self._index})

    def outs(self, outs: list[Out]) -> bytes:
        data = []
        for out in outs:
            if isinstance(out, TextOut):
                if self._kind != "text":
                    data.append(self._open("text", {"type": "text", "text": ""}))
                if self._text_frame is None:
                    # The hot path, one event per token.
                    self._text_frame = template("content_block_delta", {
                        "type": "content_block_delta", "index": self._index,
                        "delta": {"type": "text_delta", "text": "\x00"}})
                data.append(fill(self._text_frame, out.text))
            elif isinstance(out, ThinkingOut):
                if self._kind != "thinking" or self._sealed:
                    data.append(self._open("thinking", {"type": "thinking", "thinking": "",
                                                        "signature": ""}))
                data.append(self._delta({"type": "thinking_delta", "thinking": out.text}))
            elif isinstance(out, SignatureOut):
                if self._kind == "thinking":
                    self._sealed = True
                    data.append(self._delta({"type": "signature_delta",
                                             "signature": out.signature}))
            elif isinstance(out, CallStart):
                data.append(self._open("tool_use", {"type": "tool_use", "id": out.call_id,
                                                    "name": out.name, "input": {}}))
                if out.arguments:
                    data.append(self._delta({"type": "input_json_delta",
                                             "partial_json": out.arguments}))
            elif isinstance(out, CallArgs) and self._kind == "tool_use":
                # Calls stream one after another: arguments belong to the open block.
                data.append(self._delta({"type": "input_json_delta",
                                         "partial_json": out.arguments}))
        return b"".join(data)

    def closing(self, answer: Answer) -> bytes:
        stop_reason = answer.finish or "end_turn"
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": stop_reason, "stop_sequence": answer.stop_sequence},
                 "usage": usage_json(answer.usage)}
        return self._close() + self._event(delta) + MESSAGE_STOP

    def failure(self, error: APIError) -> bytes:
        return self._event(anthropic_error(error)[1])

    def streams_failure(self, error: APIError) -> bool:
        return False

    def heartbeat(self) -> bytes:
        return PING
