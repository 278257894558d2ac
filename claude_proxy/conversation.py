"""
The conversation the CLI is given, in Anthropic's terms whatever API it came
through: a system prompt, then alternating user/assistant messages of content
blocks, ending with a user message. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from claude_proxy.errors import bad_request
from claude_proxy.tools import client_tool_name

Block = dict[str, Any]


@frozen
class Message:
    """One Anthropic message: "user" or "assistant", and its content blocks."""

    role: str
    content: tuple[Block, ...]

    def has_tool_blocks(self) -> bool:
        return any(b["type"] in ("tool_use", "tool_result") for b in self.content)


@frozen
class Conversation:
    system: str
    messages: tuple[Message, ...]

    @property
    def history(self) -> tuple[Message, ...]:
        return self.messages[:-1]

    @property
    def last(self) -> Message:
        return self.messages[-1]

    def uses_tools(self) -> bool:
        return any(m.has_tool_blocks() for m in self.messages)

    def ends_tool_loop(self) -> bool:
        """Whether the last assistant message called tools (its results follow)."""
        reply = self._last_reply()
        return reply is not None and any(b["type"] == "tool_use" for b in reply.content)

    def last_call_signed(self) -> bool:
        """Whether the last assistant message holds its signed (or redacted) thinking block."""
        reply = self._last_reply()
        return reply is not None and any(
            b["type"] == "redacted_thinking" or (b["type"] == "thinking" and b.get("signature"))
            for b in reply.content)

    def _last_reply(self) -> Message | None:
        replies = [m for m in self.messages if m.role == "assistant"]
        return replies[-1] if replies else None

    def tools_as_text(self) -> Conversation:
        """
        The conversation with tool calls and results as text, for a request that
        offers no tools: the API refuses tool blocks without their definitions.
        """
        return Conversation(self.system, tuple(
            Message(m.role, tuple(block for b in m.content for block in _as_text(b)))
            for m in self.messages))


def _as_text(block: Block) -> list[Block]:
    if block["type"] == "tool_use":
        name = client_tool_name(block["name"]) or block["name"]
        return [text_block(f"[called {name} with {json.dumps(block['input'], ensure_ascii=False)}]")]
    if block["type"] == "tool_result":
        inner = block["content"]
        texts = [b["text"] for b in inner if b["type"] == "text"]
        images = [b for b in inner if b["type"] == "image"]
        return [text_block("[tool result]\n" + "\n".join(texts)), *images]
    return [block]


def text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def conversation_of(system: list[str], turns: list[tuple[str, list[Block]]],
                    where: str = "messages") -> Conversation:
    """
    The conversation of a system prompt's parts and (role, blocks) turns, as
    any door parses them: empty turns dropped, consecutive turns of one role
    made one (as the API itself does), tool results first in a user message.
    """
    merged: list[tuple[str, list[Block]]] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    if not merged:
        raise bad_request(f"{where} must contain at least one user message.", where)
    if merged[-1][0] != "user":
        raise bad_request("The last message must be a user message (or tool results).", where)
    messages = []
    for role, blocks in merged:
        # The API wants a user message's tool_result blocks before anything else.
        blocks.sort(key=lambda b: b["type"] != "tool_result")
        messages.append(Message(role, tuple(blocks)))
    return Conversation("\n\n".join(s for s in system if s), tuple(messages))
