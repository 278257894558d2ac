"""
What a conversation is, for continuing it in a live CLI session instead of
replaying it. Pure.

A live session is known by its shape (the plan's fixed part: model, system
prompt, tools, flags, environment with the account; and the API key that made
it) and by every turn of its conversation including the answer the client got.
Clients re-serialize what they send back, so turns are compared as the
parsers see them, canonically: tool ids by their letters and digits (a
leading "call" dropped: the OpenAI doors' ids are "call" + the API's), text
stripped, an assistant message's texts joined, thinking left out (OpenAI
clients drop it; a live session keeps its own), images by digest.
"""

from __future__ import annotations

import hashlib
import json
import re

from attrs import frozen

from claude_proxy.answer import END_TURN, TOOL_USE, Answer
from claude_proxy.conversation import Block, Message
from claude_proxy.plan import RunPlan, TurnSettings, user_line
from claude_proxy.request import NeutralRequest
from claude_proxy.tools import model_tool_name

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def canonical_id(tool_id: str) -> str:
    """A tool-call id as every door's round trip leaves it: toolu_01A, calltoolu01A → toolu01A."""
    bare = _NOT_ALNUM.sub("", tool_id)
    return bare[4:] if bare.startswith("call") else bare


@frozen
class ToolResult:
    """A client's result for one held tool call, as the tools' MCP server answers it."""

    tool_id: str  # canonical
    content: tuple[dict, ...]  # MCP content: text and image items
    is_error: bool = False

    def mcp(self) -> dict:
        result: dict = {"content": list(self.content)}
        if self.is_error:
            result["isError"] = True
        return result


@frozen
class Continuation:
    """
    What continuing a request's conversation in a live session takes: the
    session's keys, and what to send it — the last message as a turn of its
    own to an idle session, or its tool results to one waiting for them; and
    what the session holds once the answer is given.
    """

    shape: tuple[tuple[str, str], ...]  # the process's shape, part by part, and the API key
    history: str | None  # the conversation before the last message; None: a first turn
    line: bytes = b""
    results: tuple[ToolResult, ...] | None = None  # None: not only tool results
    settings: TurnSettings = TurnSettings()  # the turn's (a held turn cannot change them)
    messages: tuple[Message, ...] = ()  # the request's whole conversation
    structured: bool = False  # an output schema: the CLI's conversation is not the client's

    def after(self, answer: Answer) -> str | None:
        """
        The conversation a session holds once this answer is given, or None when
        the CLI's conversation is not what the client got (the answer was cut at a
        stop sequence or the token limit, broke, or is structured output).
        """
        if answer.error is not None or answer.diverged or answer.finish not in (END_TURN, TOOL_USE) \
                or self.structured:
            return None
        return conversation_digest(self.messages + (answer_message(answer),))


def shape_of(plan: RunPlan, key_id: str | None) -> tuple[tuple[str, str], ...]:
    return (*plan.shape.items(), ("key", _digest(key_id)))


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _block(block: Block) -> list | None:
    kind = block["type"]
    if kind in ("thinking", "redacted_thinking"):
        return None
    if kind == "tool_use":
        return ["tool_use", canonical_id(block["id"]), block["name"], block.get("input")]
    if kind == "tool_result":
        return ["tool_result", canonical_id(block["tool_use_id"]), bool(block.get("is_error")),
                _blocks(block.get("content") or [])]
    if kind == "image":
        return ["image", _digest(block.get("source"))]
    return [kind, {k: v for k, v in block.items() if k != "type"}]


def _blocks(blocks: list[Block] | tuple[Block, ...]) -> list:
    """A user message's (or a tool result's) blocks: adjacent texts joined, stripped."""
    out: list = []
    for block in blocks:
        if block["type"] == "text":
            if out and out[-1][0] == "text":
                out[-1][1] += block["text"]
            else:
                out.append(["text", block["text"]])
            continue
        canonical = _block(block)
        if canonical is not None:
            out.append(canonical)
    for item in out:
        if item[0] == "text":
            item[1] = item[1].strip()
    return [item for item in out if item != ["text", ""]]


def canonical(message: Message) -> list:
    if message.role == "assistant":
        # Clients give an answer's text back as one string, before its tool calls.
        text = "".join(b["text"] for b in message.content if b["type"] == "text").strip()
        calls = [_block(b) for b in message.content if b["type"] == "tool_use"]
        return ["assistant", text, calls]
    return ["user", _blocks(message.content)]


def conversation_digest(messages: tuple[Message, ...]) -> str:
    return _digest([canonical(m) for m in messages])


def _mcp_content(block: Block) -> dict | None:
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    source = block.get("source") if block["type"] == "image" else None
    if isinstance(source, dict) and source.get("type") == "base64":
        return {"type": "image", "data": source["data"], "mimeType": source["media_type"]}
    return None  # an image by URL, a document: MCP has no way to hand it over


def tool_results(message: Message) -> tuple[ToolResult, ...] | None:
    """A user message of tool results only, as MCP results; None if it holds anything else."""
    results = []
    for block in message.content:
        if block["type"] != "tool_result":
            return None
        content = [_mcp_content(b) for b in block.get("content") or []]
        if any(c is None for c in content):
            return None
        results.append(ToolResult(canonical_id(block["tool_use_id"]), tuple(content),
                                  bool(block.get("is_error"))))
    return tuple(results) or None


def continuation_of(plan: RunPlan, request: NeutralRequest, key_id: str | None) -> Continuation:
    """How this request would continue a live session, and be kept after it."""
    conversation = request.conversation
    kept = {"messages": conversation.messages, "structured": request.output is not None}
    if not conversation.history:
        return Continuation(shape_of(plan, key_id), None, **kept)
    return Continuation(shape_of(plan, key_id), conversation_digest(conversation.history),
                        user_line(conversation.last), tool_results(conversation.last),
                        plan.settings, **kept)


def answer_message(answer: Answer) -> Message:
    """The answer as the assistant turn a client sends back."""
    blocks: list[Block] = []
    for part in answer.parts:
        if part.kind == "text":
            blocks.append({"type": "text", "text": part.text})
        elif part.kind == "tool_use":
            try:
                arguments = json.loads(part.arguments or "{}")
            except ValueError:
                arguments = None
            blocks.append({"type": "tool_use", "id": part.call_id,
                           "name": model_tool_name(part.name), "input": arguments})
    return Message("assistant", tuple(blocks))
