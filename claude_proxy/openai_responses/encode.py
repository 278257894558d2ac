"""
The neutral answer → OpenAI's `response` object, or its stream of named
events (`response.created` … `response.completed`), each with a
`sequence_number` counting from 0. The answer's parts map one to one onto
output items: thinking → `reasoning`, text → `message`, a tool call →
`function_call`; item ids are the response's id and the item's index, so the
streamed items and the final object agree. Pure (the `store_response` callback lets the
door store a finished response).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen

from claude_proxy.answer import Answer, CallArgs, CallStart, Out, Part, SignatureOut, TextOut, \
    ThinkingOut
from claude_proxy.errors import APIError
from claude_proxy.events import Usage
from claude_proxy.openai_responses.parse import encrypted_reasoning
from claude_proxy.sse import KEEP_ALIVE, dumps, frame, template
from claude_proxy.tools import openai_call_id

# Anthropic stop reasons that leave a response incomplete, and OpenAI's reason.
INCOMPLETE = {"max_tokens": "max_output_tokens", "refusal": "content_filter"}


@frozen
class Shape:
    """What a request asked of its response's shape, beyond the answer itself."""

    response_id: str
    model: str
    created: int
    echo: dict[str, Any]  # request fields the response repeats (instructions, tools, ...)
    names: dict[str, tuple[str, str]] = field(factory=dict)  # flattened tool name → (namespace, name)
    summary: bool = False  # thinking as summary_text parts
    encrypted: bool = False  # signed thinking in encrypted_content


def usage_json(usage: Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens,
                                 "cache_write_tokens": usage.cache_creation_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
    }


def status_of(answer: Answer) -> tuple[str, dict | None]:
    reason = INCOMPLETE.get(answer.finish or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def item_id(shape: Shape, kind: str, index: int) -> str:
    prefix = {"thinking": "rs", "text": "msg", "tool_use": "fc"}[kind]
    return f"{prefix}_{shape.response_id.removeprefix('resp_')}_{index}"


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(shape: Shape, index: int, call_id: str, name: str, arguments: str,
              status: str) -> dict:
    item: dict[str, Any] = {"type": "function_call", "id": item_id(shape, "tool_use", index),
                            "call_id": openai_call_id(call_id), "name": name,
                            "arguments": arguments, "status": status}
    if name in shape.names:
        item["namespace"], item["name"] = shape.names[name]
    return item


def output_item(shape: Shape, index: int, part: Part, status: str = "completed") -> dict:
    """One part of the answer as a finished output item."""
    if part.kind == "thinking":
        item: dict[str, Any] = {
            "type": "reasoning", "id": item_id(shape, "thinking", index),
            "summary": [{"type": "summary_text", "text": part.text}]
            if shape.summary and part.text else []}
        if shape.encrypted and part.signature:
            item["encrypted_content"] = encrypted_reasoning(part.text, part.signature)
        return item
    if part.kind == "text":
        return {"type": "message", "id": item_id(shape, "text", index), "status": status,
                "role": "assistant", "content": [text_part(part.text)]}
    return call_item(shape, index, part.call_id, part.name, part.arguments or "{}", status)


def outputs(shape: Shape, answer: Answer) -> list[dict]:
    status, _ = status_of(answer)
    last = len(answer.parts) - 1
    return [output_item(shape, i, part, status if i == last else "completed")
            for i, part in enumerate(answer.parts)]


def response_json(shape: Shape, status: str, output: list[dict], usage: Usage | None,
                  incomplete: dict | None = None, error: dict | None = None) -> dict:
    return {
        "id": shape.response_id,
        "object": "response",
        "created_at": shape.created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "model": shape.model,
        "output": output,
        "usage": None if usage is None else usage_json(usage),
        **shape.echo,
    }


def final_response(shape: Shape, answer: Answer) -> dict:
    status, incomplete = status_of(answer)
    return response_json(shape, status, outputs(shape, answer), answer.usage, incomplete)


RATE_LIMITED = "rate_limit_exceeded"
# The API's code for a context overflow, which Codex and the openai SDKs act on
# (the SDK's ResponseError type does not list it, the API sends it).
CONTEXT_OVERFLOW = "context_length_exceeded"


def error_json(error: APIError) -> dict:
    """
    A failure as a response's `error`: its code is one of OpenAI's few (the
    proxy's own code stays in `type`'s company, in the message); a known wait
    is said as OpenAI says it, which Codex reads as its retry delay.
    """
    code = CONTEXT_OVERFLOW if error.code == CONTEXT_OVERFLOW else \
        RATE_LIMITED if error.status == 429 else "server_error"
    message = error.message
    if code == RATE_LIMITED and error.retry_after is not None:
        message += f" Please try again in {error.retry_after}s."
    return {"code": code,
            "message": f"{message} ({error.code})" if error.code else message,
            "type": error.type, "param": error.param}


def failed_response(shape: Shape, error: APIError) -> dict:
    return response_json(shape, "failed", [], None, error=error_json(error))


@frozen
class _Item:
    """The output item being streamed."""

    kind: str  # "thinking", "text" or "tool_use"
    index: int  # its output_index
    id: str


@define
class ResponsesEncoder:
    shape: Shape
    store_response: Callable[[dict, Answer], None] | None = None
    _seq: int = field(default=0, init=False)
    _item: _Item | None = field(default=None, init=False)
    _count: int = field(default=0, init=False)
    _texts: list[str] = field(factory=list, init=False)  # the open item's text so far
    _signature: str = field(default="", init=False)
    _call: tuple[str, str] = field(default=("", ""), init=False)  # the open call's id and name
    _delta: tuple[bytes, bytes] = field(default=(b"", b""), init=False)

    def body(self, answer: Answer) -> dict:
        response = final_response(self.shape, answer)
        self._kept(response, answer)
        output_text = "".join(p.text for p in answer.parts if p.kind == "text")
        return {**response, "output_text": output_text}

    def _kept(self, response: dict, answer: Answer) -> None:
        if self.store_response is not None:
            self.store_response(response, answer)

    def _event(self, kind: str, **data: Any) -> bytes:
        seq, self._seq = self._seq, self._seq + 1
        return frame(dumps({"type": kind, **data, "sequence_number": seq}), kind)

    def opening(self, answer: Answer) -> bytes:
        started = response_json(self.shape, "in_progress", [], None)
        return self._event("response.created", response=started) + \
            self._event("response.in_progress", response=started)

    def outs(self, outs: list[Out]) -> bytes:
        data = []
        for out in outs:
            if isinstance(out, TextOut):
                # The hot path, one event per token.
                if self._item is None or self._item.kind != "text":
                    data.append(self._open("text"))
                self._texts.append(out.text)
                seq, self._seq = self._seq, self._seq + 1
                data.append(self._delta[0] + dumps(out.text) +
                            b',"sequence_number":%d}\n\n' % seq)
            elif isinstance(out, ThinkingOut):
                if self._item is None or self._item.kind != "thinking":
                    data.append(self._open("thinking"))
                self._texts.append(out.text)
                if self.shape.summary and out.text:
                    data.append(self._event("response.reasoning_summary_text.delta",
                                            **self._at(), summary_index=0, delta=out.text))
            elif isinstance(out, SignatureOut):
                self._signature = out.signature
            elif isinstance(out, CallStart):
                data.append(self._open("tool_use", (out.call_id, out.name)))
                if out.arguments:
                    data.append(self._arguments(out.arguments))
            elif isinstance(out, CallArgs):
                data.append(self._arguments(out.arguments))
        return b"".join(data)

    def _at(self) -> dict:
        assert self._item is not None
        return {"item_id": self._item.id, "output_index": self._item.index}

    def _arguments(self, delta: str) -> bytes:
        self._texts.append(delta)
        return self._event("response.function_call_arguments.delta", **self._at(), delta=delta)

    def _open(self, kind: str, call: tuple[str, str] = ("", "")) -> bytes:
        data = self._close("completed")
        self._call = call
        index = self._count
        self._count += 1
        self._item = _Item(kind, index, item_id(self.shape, kind, index))
        self._texts, self._signature = [], ""
        at = self._at()
        if kind == "thinking":
            data += self._event("response.output_item.added", output_index=index,
                                item={"type": "reasoning", "id": self._item.id, "summary": []})
            if self.shape.summary:
                data += self._event("response.reasoning_summary_part.added", **at,
                                    summary_index=0, part={"type": "summary_text", "text": ""})
        elif kind == "text":
            data += self._event("response.output_item.added", output_index=index, item={
                "type": "message", "id": self._item.id, "status": "in_progress",
                "role": "assistant", "content": []})
            data += self._event("response.content_part.added", **at, content_index=0,
                                part=text_part(""))
            self._delta = template("response.output_text.delta", {
                "type": "response.output_text.delta", **at, "content_index": 0,
                "logprobs": [], "delta": "\x00"})
            assert self._delta[1] == b"}\n\n"
        else:
            call_id, name = self._call
            data += self._event("response.output_item.added", output_index=index,
                                item=call_item(self.shape, index, call_id, name, "",
                                               "in_progress"))
        return data

    def _close(self, status: str) -> bytes:
        """The events that finish the open item, if any."""
        item = self._item
        if item is None:
            return b""
        self._item = None
        text = "".join(self._texts)
        at = {"item_id": item.id, "output_index": item.index}
        part = Part(item.kind, text, self._signature, *self._call)
        data = b""
        if item.kind == "thinking" and self.shape.summary:
            done = {"type": "summary_text", "text": text}
            data += self._event("response.reasoning_summary_text.done", **at, summary_index=0,
                                text=text)
            data += self._event("response.reasoning_summary_part.done", **at, summary_index=0,
                                part=done)
        elif item.kind == "text":
            data += self._event("response.output_text.done", **at, content_index=0, text=text,
                                logprobs=[])
            data += self._event("response.content_part.done", **at, content_index=0,
                                part=text_part(text))
        elif item.kind == "tool_use":
            data += self._event("response.function_call_arguments.done", **at,
                                arguments=text or "{}")
        return data + self._event("response.output_item.done", output_index=item.index,
                                  item=output_item(self.shape, item.index, part, status))

    def closing(self, answer: Answer) -> bytes:
        response = final_response(self.shape, answer)
        self._kept(response, answer)
        data = self._close(response["status"])
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return data + self._event(kind, response=response)

    def failure(self, error: APIError) -> bytes:
        # Codex and the openai SDK both end a stream on response.failed and read its error.
        return self._event("response.failed", response=failed_response(self.shape, error))

    def streams_failure(self, error: APIError) -> bool:
        # Codex waits the "try again in N s" of a rate_limit_exceeded response.failed and
        # retries (stream_max_retries); an HTTP 429 it never retries.
        return error.code == RATE_LIMITED

    def heartbeat(self) -> bytes:
        return KEEP_ALIVE


def deleted(response_id: str) -> dict:
    return {"id": response_id, "object": "response", "deleted": True}
