"""
The neutral answer → OpenAI's `chat.completion` body, or a stream of
`chat.completion.chunk`s ending in `[DONE]`. Pure.
"""

from __future__ import annotations

from typing import Any

from attrs import define, field

from claude_proxy.answer import Answer, CallArgs, CallStart, Out, TextOut, ThinkingOut
from claude_proxy.errors import APIError
from claude_proxy.events import Usage
from claude_proxy.openai_chat.errors import openai_error
from claude_proxy.sse import KEEP_ALIVE, dumps, fill, frame, template
from claude_proxy.tools import openai_call_id

# The API's stop reasons, in OpenAI's words.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
DONE = frame(b"[DONE]")


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def message(answer: Answer) -> dict[str, Any]:
    """The assistant message of a non-streamed completion."""
    content = answer.text
    calls = answer.calls
    out: dict[str, Any] = {"role": "assistant", "content": content or (None if calls else ""),
                           "refusal": None}
    reasoning = answer.reasoning
    if reasoning:
        out["reasoning_content"] = reasoning
    if calls:
        out["tool_calls"] = [
            {"id": openai_call_id(c.call_id), "type": "function",
             "function": {"name": c.name, "arguments": c.arguments or "{}"}} for c in calls]
    return out


def delta_of(out: Out) -> dict[str, Any]:
    if isinstance(out, TextOut):
        return {"content": out.text}
    if isinstance(out, ThinkingOut):
        return {"reasoning_content": out.text}
    if isinstance(out, CallStart):
        return {"tool_calls": [{"index": out.index, "id": openai_call_id(out.call_id),
                                "type": "function",
                                "function": {"name": out.name, "arguments": out.arguments}}]}
    if isinstance(out, CallArgs):
        return {"tool_calls": [{"index": out.index, "function": {"arguments": out.arguments}}]}
    return {}  # a thinking signature: OpenAI Chat has nowhere to put it


@define
class ChatEncoder:
    completion_id: str
    model: str
    created: int
    include_usage: bool = False
    _text_frame: tuple[bytes, bytes] | None = field(default=None, init=False)

    def body(self, answer: Answer) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message(answer), "logprobs": None,
                         "finish_reason": finish_reason(answer.finish)}],
            "usage": usage_json(answer.usage),
            "system_fingerprint": None,
        }

    def chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _send(self, obj: dict) -> bytes:
        return frame(dumps(obj))

    def opening(self, answer: Answer) -> bytes:
        return self._send(self.chunk({"role": "assistant", "content": ""}))

    def outs(self, outs: list[Out]) -> bytes:
        data = []
        for out in outs:
            if isinstance(out, TextOut):
                # The hot path, one event per token.
                if self._text_frame is None:
                    self._text_frame = template(None, self.chunk({"content": "\x00"}))
                data.append(fill(self._text_frame, out.text))
            else:
                delta = delta_of(out)
                if delta:
                    data.append(self._send(self.chunk(delta)))
        return b"".join(data)

    def closing(self, answer: Answer) -> bytes:
        data = self._send(self.chunk({}, finish_reason(answer.finish)))
        if self.include_usage:
            data += self._send({
                "id": self.completion_id, "object": "chat.completion.chunk",
                "created": self.created, "model": self.model, "choices": [],
                "usage": usage_json(answer.usage)})
        return data + DONE

    def failure(self, error: APIError) -> bytes:
        return self._send(openai_error(error)[1]) + DONE

    def streams_failure(self, error: APIError) -> bool:
        return False

    def heartbeat(self) -> bytes:
        return KEEP_ALIVE
