"""
What the two OpenAI APIs (Chat Completions and Responses) share in their
requests: content parts (text, refusal, image) and function calls with JSON
string arguments, as Anthropic blocks. Pure.
"""

from __future__ import annotations

import json

from claude_proxy.conversation import Block, text_block
from claude_proxy.errors import bad_request
from claude_proxy.images import image_block
from claude_proxy.tools import anthropic_tool_id, model_tool_name

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
IMAGE_PARTS = frozenset({"image_url", "input_image"})
IMAGE_ROLES = frozenset({"user", "tool"})


def content_blocks(content: object, where: str, role: str, image_urls: bool = False) -> list[Block]:
    """
    A message's content (a string or a list of parts) as Anthropic blocks.
    `role` is "user", "assistant", "system" or "tool" (images only in user
    and tool content); `image_urls`: pass http(s) image URLs on for the API
    to fetch (else a 400).
    """
    if content is None:
        if role in ("assistant", "tool"):
            return []
        raise bad_request(f"{where} must not be null for a {role} message.", where)
    if isinstance(content, str):
        return [text_block(content)] if content else []
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
        if not isinstance(kind, str):
            raise bad_request(f"{at}.type must be a string.", f"{at}.type")
        if kind in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{at}.text must be a string.", f"{at}.text")
            if text:
                blocks.append(text_block(text))
        elif kind == "refusal":
            if part.get("refusal"):
                blocks.append(text_block(str(part["refusal"])))
        elif kind in IMAGE_PARTS:
            if role not in IMAGE_ROLES:
                raise bad_request(f"{at}: images are only accepted in user and tool messages.", at)
            blocks.append(image_block(part, at, image_urls))
        elif kind in ("input_audio", "file", "input_file"):
            raise bad_request(f"{at}: content parts of type '{kind}' are not supported.",
                              at, "unsupported_content")
        else:
            raise bad_request(f"{at}: unknown content part type {kind!r}.", at)
    return blocks


def texts_of(blocks: list[Block]) -> str:
    return "\n".join(b["text"] for b in blocks if b["type"] == "text")


def tool_use_block(call_id: object, name: object, arguments: object, where: str,
                   id_param: str, name_param: str, arguments_param: str) -> Block:
    """A function call (id, name, JSON string arguments) as a tool_use block; params name fields in errors."""
    if not isinstance(name, str) or not name:
        raise bad_request(f"{where}.{name_param} must be a string.", f"{where}.{name_param}")
    arguments = arguments or "{}"
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise bad_request(f"{where}.{arguments_param} is not valid JSON.",
                          f"{where}.{arguments_param}") from None
    if not isinstance(parsed, dict):
        raise bad_request(f"{where}.{arguments_param} must be a JSON object.",
                          f"{where}.{arguments_param}")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.{id_param} must be a non-empty string.", f"{where}.{id_param}")
    return {"type": "tool_use", "id": anthropic_tool_id(call_id), "name": model_tool_name(name),
            "input": parsed}


def tool_result_block(call_id: object, content: object, where: str, id_param: str,
                      content_param: str, image_urls: bool) -> Block:
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.{id_param} must be a non-empty string.", f"{where}.{id_param}")
    result = content_blocks(content, f"{where}.{content_param}", "tool", image_urls)
    return {"type": "tool_result", "tool_use_id": anthropic_tool_id(call_id),
            "content": result or [text_block("(no output)")]}
