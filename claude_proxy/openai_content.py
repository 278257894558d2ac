"""
What the two OpenAI APIs (Chat Completions and Responses) share in their
requests: content parts (text, refusal, image) and function calls with JSON
string arguments, as Anthropic blocks; limits, response formats, reasoning
effort and tool choice. Pure.
"""

from __future__ import annotations

import json

from claude_proxy.conversation import Block, text_block
from claude_proxy.errors import bad_request
from claude_proxy.images import image_block
from claude_proxy.request import OutputFormat, output_schema
from claude_proxy.tools import Tool, ToolChoice, anthropic_tool_id, model_tool_name

# OpenAI's reasoning effort → the CLI's --effort ("none" turns thinking off).
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}
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


def optional_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"{key} must be a positive integer.", key)
    return value


def output_format(value: object, param: str, schema_of: str) -> OutputFormat | None:
    """
    OpenAI's response format (`response_format`, or Responses' `text.format`):
    text, json_object, or json_schema with the schema at `schema_of`.
    """
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat({"type": "object"})
    if kind == "json_schema":
        spec = value.get(schema_of) if schema_of else value
        schema = spec.get("schema") if isinstance(spec, dict) else None
        where = f"{param}.{schema_of}.schema" if schema_of else f"{param}.schema"
        return output_schema(schema, where)
    raise bad_request(f"{param}.type must be 'text', 'json_object' or 'json_schema'.",
                      f"{param}.type")


def effort_of(value: object, param: str) -> str | None:
    if value is None or value == "none":
        return None
    if not isinstance(value, str) or value not in EFFORTS:
        raise bad_request(f"{param} must be one of none, {', '.join(EFFORTS)}.", param)
    return EFFORTS[value]


def parse_tool_choice(value: object, tools: tuple[Tool, ...]) -> ToolChoice:
    if value is None or value == "auto":
        return ToolChoice()
    if value in ("none", "required"):
        return ToolChoice(str(value))
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        # Responses names the function at the top level.
        name = function.get("name") if isinstance(function, dict) else value.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise bad_request(f"tool_choice names {name!r}, which is not in tools.", "tool_choice")
        return ToolChoice("function", name)
    raise bad_request("tool_choice must be 'none', 'auto', 'required' or a named function.",
                      "tool_choice")
