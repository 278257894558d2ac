"""
An Anthropic Messages request (`POST /v1/messages`, or `count_tokens`) → the
neutral request. Unknown keys are ignored, as Anthropic's own clients send
new ones often; invalid values get a 400 naming the param. Pure.
"""

from __future__ import annotations

from attrs import frozen

from claude_proxy.conversation import Block, Conversation, conversation_of, text_block
from claude_proxy.errors import APIError, bad_request
from claude_proxy.images import base64_image, url_image
from claude_proxy.models import resolve
from claude_proxy.request import EFFORTS, NeutralRequest, OutputFormat, output_schema, settled
from claude_proxy.tools import (
    Tool, ToolChoice, anthropic_tool_id, make_tool, model_tool_name, unique_tools,
)

# Accepted and documented as ignored: the CLI has no way to pass them on.
IGNORED = (
    "temperature", "top_p", "top_k", "metadata", "context_management", "container",
    "service_tier", "inference_geo",
)
ROLES = frozenset({"user", "assistant", "system"})
# Claude Code's first system block, its own attribution for the API: the
# daemon's CLI sends its own, so the client's is not the model's to read.
BILLING_HEADER = "x-anthropic-billing-header:"
# Blocks that carry content the model reads (assistants' may only be text).
CONTENT_KINDS = frozenset({"text", "image", "document", "search_result"})
# Every block type a message may hold, in the right role.
MESSAGE_KINDS = CONTENT_KINDS | {"tool_result", "tool_use", "thinking", "redacted_thinking"}
# Extended thinking's smallest budget, as the API enforces it.
MIN_BUDGET = 1024
# A thinking budget → the CLI's --effort: below 4k low, below 16k medium, else
# high (Claude Code's own 31999 lands on high). "max" only when asked by name.
BUDGET_EFFORTS = ((4000, "low"), (16000, "medium"))
# With adaptive thinking and no output_config.effort: the API's own default.
DEFAULT_EFFORT = "high"


@frozen
class Parsed:
    """A request, and the kinds of server tools it offered that were left out."""

    request: NeutralRequest
    left_out: tuple[str, ...] = ()


def _object(value: object, param: str) -> dict:
    if not isinstance(value, dict):
        raise bad_request(f"{param} must be an object.", param)
    return value


def _string(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{param} must be a string.", param)
    return value


def _kind(block: object, at: str) -> str:
    kind = _object(block, at).get("type")
    if not isinstance(kind, str):
        raise bad_request(f"{at}.type must be a string.", f"{at}.type")
    return kind


def _unsupported(kind: object, at: str) -> APIError:
    return bad_request(f"{at}: content blocks of type {kind!r} are not supported by this proxy.",
                      at, "unsupported_content")


def _texts(content: object, where: str) -> str:
    """The text of a `system` value or system message: a string or text blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of text blocks.", where)
    texts = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        if _object(block, at).get("type") != "text":
            raise bad_request(f"{at}: only text blocks are accepted here.", f"{at}.type")
        texts.append(_string(block.get("text"), f"{at}.text"))
    return "\n\n".join(t for t in texts if t and not t.startswith(BILLING_HEADER))


def _image(block: dict, at: str, image_urls: bool) -> Block:
    source = _object(block.get("source"), f"{at}.source")
    kind = source.get("type")
    if kind == "base64":
        data = _string(source.get("data"), f"{at}.source.data")
        declared = source.get("media_type")
        declared = declared if isinstance(declared, str) else ""
        return base64_image(data, declared, f"{at}.source.data")
    if kind == "url":
        return url_image(_string(source.get("url"), f"{at}.source.url"), f"{at}.source.url",
                         image_urls)
    raise bad_request(f"{at}.source.type must be 'base64' or 'url'.", f"{at}.source.type",
                      "unsupported_content")


def _document(block: dict, at: str) -> Block:
    """A plain-text document as text; PDFs and files are refused (the proxy cannot pass them on)."""
    source = _object(block.get("source"), f"{at}.source")
    if source.get("type") == "text":
        text = _string(source.get("data"), f"{at}.source.data")
    elif source.get("type") == "content":
        text = _texts(source.get("content"), f"{at}.source.content")
    else:
        raise bad_request(f"{at}: only text documents are supported (source.type 'text' or "
                          f"'content').", f"{at}.source.type", "unsupported_content")
    title = block.get("title")
    return text_block(f"[document: {title}]\n{text}" if isinstance(title, str) and title else text)


def _search_result(block: dict, at: str) -> Block:
    title = _string(block.get("title", ""), f"{at}.title")
    source = _string(block.get("source", ""), f"{at}.source")
    return text_block(f"[search result: {title} ({source})]\n"
                      + _texts(block.get("content"), f"{at}.content"))


def _content_block(block: dict, at: str, image_urls: bool) -> Block | None:
    """A text, image, document or search result block (None for empty text)."""
    kind = block.get("type")
    if kind == "text":
        text = _string(block.get("text"), f"{at}.text")
        return text_block(text) if text else None
    if kind == "image":
        return _image(block, at, image_urls)
    if kind == "document":
        return _document(block, at)
    if kind == "search_result":
        return _search_result(block, at)
    raise AssertionError(kind)


def _inner_blocks(content: object, where: str, image_urls: bool) -> list[Block]:
    """A tool result's content: a string, or text, image, document and search result blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [text_block(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content blocks.", where)
    blocks: list[Block | None] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        kind = _kind(block, at)
        if kind in CONTENT_KINDS:
            blocks.append(_content_block(block, at, image_urls))
        elif kind == "tool_reference":
            # Claude Code's tool search names a deferred tool; every tool is offered anyway.
            blocks.append(text_block(f"[tool {block.get('tool_name')} is available]"))
        else:
            raise _unsupported(kind, at)
    return [b for b in blocks if b is not None]


def _tool_use(block: dict, at: str) -> Block:
    call_id = block.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{at}.id must be a non-empty string.", f"{at}.id")
    name = block.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request(f"{at}.name must be a non-empty string.", f"{at}.name")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise bad_request(f"{at}.input must be an object.", f"{at}.input")
    return {"type": "tool_use", "id": anthropic_tool_id(call_id), "name": model_tool_name(name),
            "input": arguments}


def _tool_result(block: dict, at: str, image_urls: bool) -> Block:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{at}.tool_use_id must be a non-empty string.", f"{at}.tool_use_id")
    content = _inner_blocks(block.get("content"), f"{at}.content", image_urls)
    result: Block = {"type": "tool_result", "tool_use_id": anthropic_tool_id(call_id),
                     "content": content or [text_block("(no output)")]}
    if block.get("is_error") is True:
        result["is_error"] = True
    return result


def _thinking(block: dict, at: str) -> Block | None:
    thinking = _string(block.get("thinking", ""), f"{at}.thinking")
    signature = block.get("signature")
    if not isinstance(signature, str) or not signature:
        return None  # the API refuses a thinking block it did not sign
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def _message_blocks(content: object, where: str, role: str, image_urls: bool) -> list[Block]:
    """A user or assistant message's content as clean blocks (no cache_control or citations)."""
    if isinstance(content, str):
        return [text_block(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of content blocks.", where)
    blocks: list[Block | None] = []
    for i, block in enumerate(content):
        at = f"{where}[{i}]"
        kind = _kind(block, at)
        if kind == "text" or (kind in CONTENT_KINDS and role == "user"):
            blocks.append(_content_block(block, at, image_urls))
        elif kind == "tool_result" and role == "user":
            blocks.append(_tool_result(block, at, image_urls))
        elif kind == "tool_use" and role == "assistant":
            blocks.append(_tool_use(block, at))
        elif kind == "thinking" and role == "assistant":
            blocks.append(_thinking(block, at))
        elif kind == "redacted_thinking" and role == "assistant":
            blocks.append({"type": "redacted_thinking",
                           "data": _string(block.get("data"), f"{at}.data")})
        elif kind in MESSAGE_KINDS:
            raise bad_request(f"{at}: a {role} message cannot hold a {kind} block.", f"{at}.type")
        else:
            raise _unsupported(kind, at)
    return [b for b in blocks if b is not None]


def parse_conversation(system: object, messages: object, image_urls: bool = False) -> Conversation:
    """`system` and `messages`; a system message inside `messages` joins the system prompt."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list.", "messages")
    parts = [_texts(system, "system")]
    turns: list[tuple[str, list[Block]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = _object(message, where).get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(f"{where}.role must be 'user' or 'assistant'.", f"{where}.role")
        content = message.get("content")
        if role == "system":
            parts.append(_texts(content, f"{where}.content"))
            continue
        turns.append((role, _message_blocks(content, f"{where}.content", role, image_urls)))
    return conversation_of(parts, turns)


def parse_tools(tools: object) -> tuple[tuple[Tool, ...], tuple[str, ...]]:
    """The custom tools, and the kinds of server tools left out (the proxy cannot run them)."""
    if tools is None:
        return (), ()
    if not isinstance(tools, list):
        raise bad_request("tools must be a list.", "tools")
    custom, left_out = [], []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        kind = _object(tool, where).get("type")
        if kind not in (None, "custom"):
            left_out.append(str(kind))
            continue
        custom.append((where, make_tool(tool.get("name"), tool.get("description"),
                                        tool.get("input_schema"), where, "input_schema")))
    return unique_tools(custom), tuple(dict.fromkeys(left_out))


def parse_tool_choice(value: object, tools: tuple[Tool, ...]) -> ToolChoice:
    if value is None:
        return ToolChoice()
    kind = _object(value, "tool_choice").get("type")
    if kind == "auto":
        return ToolChoice()
    if kind == "any":
        return ToolChoice("required")
    if kind == "none":
        return ToolChoice("none")
    if kind == "tool":
        name = value.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise bad_request(f"tool_choice names {name!r}, which is not a custom tool in tools.",
                              "tool_choice.name")
        return ToolChoice("function", name)
    raise bad_request("tool_choice.type must be 'auto', 'any', 'tool' or 'none'.",
                      "tool_choice.type")


def parse_effort(thinking: object, output_config: dict) -> str | None:
    """
    The CLI's --effort, or None for thinking off: `thinking` turns it on or
    off; `output_config.effort`, else the budget, says how hard.
    """
    effort = output_config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise bad_request(f"output_config.effort must be one of {', '.join(EFFORTS)}.",
                          "output_config.effort")
    if thinking is None:
        return None
    kind = _object(thinking, "thinking").get("type")
    if kind == "disabled":
        return None
    if kind == "adaptive":
        return effort or DEFAULT_EFFORT
    if kind != "enabled":
        raise bad_request("thinking.type must be 'enabled', 'adaptive' or 'disabled'.",
                          "thinking.type")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_BUDGET:
        raise bad_request(f"thinking.budget_tokens must be an integer of at least {MIN_BUDGET}.",
                          "thinking.budget_tokens")
    if effort:
        return effort
    return next((level for below, level in BUDGET_EFFORTS if budget < below), "high")


def parse_output(body: dict, output_config: dict) -> OutputFormat | None:
    """`output_config.format` (or the older top-level `output_format`): a JSON schema."""
    param = "output_config.format"
    value = output_config.get("format")
    if value is None:
        param, value = "output_format", body.get("output_format")
    if value is None:
        return None
    if _object(value, param).get("type") != "json_schema":
        raise bad_request(f"{param}.type must be 'json_schema'.", f"{param}.type")
    return output_schema(value.get("schema"), f"{param}.schema")


def parse_stops(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise bad_request("stop_sequences must be a list of non-empty strings.", "stop_sequences")
    return tuple(value)


def parse_max_tokens(value: object) -> int:
    if value is None:
        raise bad_request("max_tokens: Field required", "max_tokens")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request("max_tokens must be a positive integer.", "max_tokens")
    return value


def _check_types(body: dict) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad_request(f"{key} must be a number.", key)
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise bad_request("top_k must be an integer.", "top_k")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean.", "stream")
    if body.get("mcp_servers"):
        raise bad_request("mcp_servers is not supported: this proxy never connects to MCP "
                          "servers. Offer their tools as custom tools instead.", "mcp_servers",
                          "unsupported_parameter")


def parse_messages_request(body: dict, image_urls: bool = False,
                           counting: bool = False) -> Parsed:
    """
    The neutral request of a Messages body; `counting`: for count_tokens,
    which takes the same body without max_tokens. `image_urls`: pass http(s)
    image URLs on for the API to fetch (else a 400).
    """
    model = resolve(body.get("model"))
    _check_types(body)
    max_tokens = None if counting else parse_max_tokens(body.get("max_tokens"))
    conversation = parse_conversation(body.get("system"), body.get("messages"), image_urls)
    tools, left_out = parse_tools(body.get("tools"))
    output_config = body.get("output_config") or {}
    _object(output_config, "output_config")
    request = NeutralRequest(
        model=model,
        conversation=conversation,
        stream=bool(body.get("stream")),
        max_tokens=max_tokens,
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        output=parse_output(body, output_config),
        stop=parse_stops(body.get("stop_sequences")),
        effort=parse_effort(body.get("thinking"), output_config),
    )
    return Parsed(settled(request), left_out)


def ignored_params(body: dict) -> tuple[str, ...]:
    return tuple(k for k in IGNORED if body.get(k) is not None)
