"""
OpenAI chat messages → the Anthropic conversation the CLI is given: a system
prompt, then alternating user/assistant messages of content blocks, ending
with a user message. Tool calls become `tool_use` blocks, tool messages
`tool_result` blocks, image parts image blocks. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen

from claude_proxy.errors import bad_request
from claude_proxy.images import image_block
from claude_proxy.tools import anthropic_tool_id, client_tool_name, model_tool_name

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SYSTEM_ROLES = frozenset({"system", "developer"})
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


@frozen
class Message:
    """One Anthropic message: "user" or "assistant", and its content blocks."""

    role: str
    content: tuple[dict[str, Any], ...]

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
        replies = [m for m in self.messages if m.role == "assistant"]
        return bool(replies) and any(b["type"] == "tool_use" for b in replies[-1].content)

    def tools_as_text(self) -> Conversation:
        """
        The conversation with tool calls and results as text, for a request that
        offers no tools: the API refuses tool blocks without their definitions.
        """
        return Conversation(self.system, tuple(
            Message(m.role, tuple(block for b in m.content for block in _as_text(b)))
            for m in self.messages))


def _as_text(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "tool_use":
        name = client_tool_name(block["name"]) or block["name"]
        return [_text(f"[called {name} with {json.dumps(block['input'], ensure_ascii=False)}]")]
    if block["type"] == "tool_result":
        inner = block["content"]
        texts = [b["text"] for b in inner if b["type"] == "text"]
        images = [b for b in inner if b["type"] == "image"]
        return [_text("[tool result]\n" + "\n".join(texts)), *images]
    return [block]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _parts(content: object, where: str, role: str, image_urls: bool = False) -> list[dict[str, Any]]:
    """A message's content (a string or a list of parts) as Anthropic blocks."""
    if content is None:
        if role in ("assistant", "tool", "function"):
            return []
        raise bad_request(f"{where} must not be null for a {role} message.", where)
    if isinstance(content, str):
        return [_text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content parts.", where)
    blocks = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, dict):
            raise bad_request(f"{at} must be an object.", at)
        kind = part.get("type")
        if kind in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{at}.text must be a string.", f"{at}.text")
            if text:
                blocks.append(_text(text))
        elif kind == "refusal":
            if part.get("refusal"):
                blocks.append(_text(str(part["refusal"])))
        elif kind == "image_url":
            if role not in ("user", "tool"):
                raise bad_request(f"{at}: images are only accepted in user and tool messages.", at)
            blocks.append(image_block(part, at, image_urls))
        elif kind in ("input_audio", "file", "input_file"):
            raise bad_request(f"{at}: content parts of type '{kind}' are not supported.",
                              at, "unsupported_content")
        else:
            raise bad_request(f"{at}: unknown content part type {kind!r}.", at)
    return blocks


def _tool_use(call: object, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        raise bad_request(f"{where} must be an object.", where)
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"{where}.function.name must be a string.", f"{where}.function.name")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise bad_request(f"{where}.function.arguments is not valid JSON.",
                          f"{where}.function.arguments") from None
    if not isinstance(parsed, dict):
        raise bad_request(f"{where}.function.arguments must be a JSON object.",
                          f"{where}.function.arguments")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.id must be a non-empty string.", f"{where}.id")
    return {"type": "tool_use", "id": anthropic_tool_id(call_id),
            "name": model_tool_name(function["name"]), "input": parsed}


def _blocks(message: dict, where: str, image_urls: bool) -> tuple[str, list[dict[str, Any]]]:
    """The Anthropic role and blocks of one OpenAI message."""
    role = message["role"]
    content = message.get("content")
    if role == "user":
        return "user", _parts(content, f"{where}.content", role, image_urls)
    if role == "assistant":
        blocks = _parts(content, f"{where}.content", role)
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            raise bad_request(f"{where}.tool_calls must be a list.", f"{where}.tool_calls")
        blocks += [_tool_use(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)]
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            # Legacy function calls carry no id to pair a result with: both sides go as text.
            blocks.append(_text(f"[called {legacy.get('name')} with {legacy.get('arguments')}]"))
        return "assistant", blocks
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(f"{where}.tool_call_id must be a non-empty string.",
                              f"{where}.tool_call_id")
        result = _parts(content, f"{where}.content", role, image_urls)
        return "user", [{"type": "tool_result", "tool_use_id": anthropic_tool_id(call_id),
                         "content": result or [_text("(no output)")]}]
    # The legacy "function" role has no call id to pair with: its output goes as text.
    name = message.get("name", "function")
    texts = [b["text"] for b in _parts(content, f"{where}.content", role) if b["type"] == "text"]
    return "user", [_text(f"[{name} returned]\n" + "\n".join(texts))]


def _merged(turns: list[tuple[str, list[dict[str, Any]]]]) -> list[Message]:
    """Consecutive messages of one role become one; tool results lead a user message."""
    merged: list[tuple[str, list[dict[str, Any]]]] = []
    for role, blocks in turns:
        if not blocks:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)
        else:
            merged.append((role, list(blocks)))
    out = []
    for role, blocks in merged:
        # The API wants a user message's tool_result blocks before anything else.
        blocks.sort(key=lambda b: b["type"] != "tool_result")
        out.append(Message(role, tuple(blocks)))
    return out


def parse_conversation(messages: object, image_urls: bool = False) -> Conversation:
    """`image_urls`: pass http(s) image URLs on for the API to fetch (else a 400)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list.", "messages")
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object.", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(ROLES)}.", f"{where}.role")
        if role in SYSTEM_ROLES:
            # _parts refuses images outside user and tool messages: only text is left.
            blocks = _parts(message.get("content"), f"{where}.content", role)
            system.append("\n".join(b["text"] for b in blocks))
            continue
        turns.append(_blocks(message, where, image_urls))
    merged = _merged(turns)
    if not merged:
        raise bad_request("messages must contain at least one user message.", "messages")
    if merged[-1].role != "user":
        raise bad_request("The last message must be a user or tool message.", "messages")
    return Conversation("\n\n".join(s for s in system if s), tuple(merged))
