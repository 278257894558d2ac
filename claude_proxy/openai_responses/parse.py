"""
An OpenAI Responses request → the neutral request, plus what its answer must
echo and how its tools are named. Input items become real turns (messages,
function calls and their outputs, reasoning we signed); `namespace` tools are
flattened under names the model accepts; hosted tools are left out and
reported. Unknown keys are ignored; invalid values get a 400 naming the param.
Pure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from attrs import frozen

from claude_proxy.conversation import Block, conversation_of, text_block
from claude_proxy.errors import bad_request
from claude_proxy.models import resolve
from claude_proxy.openai_content import (
    content_blocks, effort_of, optional_int, output_format, parse_tool_choice, texts_of,
    tool_result_block, tool_use_block,
)
from claude_proxy.request import NeutralRequest, settled
from claude_proxy.tools import Tool, make_tool, unique_tools

# Accepted and documented as ignored: the CLI has no way to pass them on.
IGNORED = (
    "temperature", "top_p", "user", "safety_identifier", "metadata", "service_tier",
    "truncation", "parallel_tool_calls", "prompt_cache_key", "prompt_cache_retention",
    "client_metadata", "max_tool_calls", "stream_options", "top_logprobs",
)
# Asked of a response, and refused: nothing here can honour them.
REFUSED = {
    "background": "Background responses are not supported: the proxy answers while connected.",
    "conversation": "The Conversations API is not supported; use previous_response_id or "
                    "send the whole input.",
    "prompt": "Stored prompt templates are not supported; send instructions and input.",
}
ENCRYPTED_REASONING = "reasoning.encrypted_content"
MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
SYSTEM_ROLES = frozenset({"system", "developer"})
SUMMARIES = frozenset({"auto", "concise", "detailed"})
# What `reasoning.effort` is when a client asks for reasoning without naming one
# (Codex sends only a summary): OpenAI's own default.
DEFAULT_EFFORT = "medium"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

Turn = tuple[str, tuple[Block, ...]]


@frozen
class Context:
    """A conversation so far, as a stored response continues it: system notes and turns."""

    system: tuple[str, ...] = ()
    turns: tuple[Turn, ...] = ()


@frozen
class Parsed:
    request: NeutralRequest
    context: Context  # everything but `instructions`, for a stored response to continue from
    names: dict[str, tuple[str, str]]  # a flattened tool name → (namespace, name)
    left_out: tuple[str, ...]  # kinds of tools not offered (hosted ones)
    summary: bool  # reasoning summaries asked for
    encrypted: bool  # signed thinking asked back in `encrypted_content`
    store: bool


def namespaced_name(namespace: str, name: str) -> str:
    """
    The name a namespace's tool has for the model: both parts, joined, within
    the API's name rules; a digest keeps names that clean up alike apart.
    """
    joined = f"{namespace}__{name}"
    if _NAME.fullmatch(joined):
        return joined
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", joined)[:55] + "_" + digest


def encrypted_reasoning(thinking: str, signature: str) -> str:
    """A signed thinking block as `encrypted_content`: opaque to the client, ours to read back."""
    whole = json.dumps({"thinking": thinking, "signature": signature}, ensure_ascii=False)
    return base64.b64encode(whole.encode("utf-8")).decode("ascii")


def thinking_block(encrypted: object) -> Block | None:
    """The thinking block of `encrypted_content` we gave, or None for anything else."""
    if not isinstance(encrypted, str):
        return None
    try:
        value = json.loads(base64.b64decode(encrypted, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    thinking, signature = value.get("thinking"), value.get("signature")
    if not isinstance(thinking, str) or not isinstance(signature, str) or not signature:
        return None
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def _refuse_unsupported(body: dict) -> None:
    for key, why in REFUSED.items():
        if body.get(key):
            raise bad_request(why, key, "unsupported_parameter")
    if body.get("top_logprobs"):
        raise bad_request("Log probabilities are not available through the Claude Code CLI.",
                          "top_logprobs", "unsupported_parameter")


def parse_tools(tools: object) -> tuple[tuple[Tool, ...], dict[str, tuple[str, str]], tuple[str, ...]]:
    """The function tools (namespaces flattened), the flattened names, and the kinds left out."""
    if tools is None:
        return (), {}, ()
    if not isinstance(tools, list):
        raise bad_request("tools must be a list.", "tools")
    parsed: list[tuple[str, Tool]] = []
    names: dict[str, tuple[str, str]] = {}
    left_out: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise bad_request(f"{where} must be an object.", where)
        kind = tool.get("type")
        if kind == "function":
            parsed.append((where, make_tool(tool.get("name"), tool.get("description"),
                                            tool.get("parameters"), where)))
        elif kind == "namespace":
            parsed.extend(_namespace(tool, where, names, left_out))
        elif isinstance(kind, str):
            left_out.append(kind)
        else:
            raise bad_request(f"{where}.type must be a string.", f"{where}.type")
    return unique_tools(parsed), names, tuple(dict.fromkeys(left_out))


def _namespace(tool: dict, where: str, names: dict[str, tuple[str, str]],
               left_out: list[str]) -> list[tuple[str, Tool]]:
    namespace = tool.get("name")
    if not isinstance(namespace, str) or not namespace:
        raise bad_request(f"{where}.name must be a non-empty string.", f"{where}.name")
    inner = tool.get("tools")
    if not isinstance(inner, list):
        raise bad_request(f"{where}.tools must be a list.", f"{where}.tools")
    about = tool.get("description")
    parsed = []
    for j, function in enumerate(inner):
        at = f"{where}.tools[{j}]"
        if not isinstance(function, dict):
            raise bad_request(f"{at} must be an object.", at)
        if function.get("type") != "function":
            left_out.append(f"{tool.get('type')}/{function.get('type')}")
            continue
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{at}.name must be a non-empty string.", f"{at}.name")
        description = function.get("description")
        if isinstance(about, str) and about and (description is None or isinstance(description, str)):
            description = f"({namespace}: {about})\n{description or ''}".rstrip()
        flat = namespaced_name(namespace, name)
        names[flat] = (namespace, name)
        parsed.append((at, make_tool(flat, description, function.get("parameters"), at)))
    return parsed


def _parts(content: object, where: str) -> object:
    """Content whose parts' types are strings (content_blocks looks them up in sets)."""
    if isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict) and not isinstance(part.get("type"), str):
                raise bad_request(f"{where}[{i}].type must be a string.", f"{where}[{i}].type")
    return content


def _call_name(item: dict, where: str) -> object:
    namespace = item.get("namespace")
    name = item.get("name")
    if namespace is None:
        return name
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise bad_request(f"{where}.namespace must be a string.", f"{where}.namespace")
    return namespaced_name(namespace, name)


def _item_turn(item: dict, where: str, image_urls: bool, system: list[str]) -> Turn | None:
    """One input item as a turn (a system or developer message goes to `system`)."""
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(MESSAGE_ROLES)}.",
                              f"{where}.role")
        if role in SYSTEM_ROLES:
            content = _parts(item.get("content"), f"{where}.content")
            system.append(texts_of(content_blocks(content, f"{where}.content", "system")))
            return None
        blocks = content_blocks(_parts(item.get("content"), f"{where}.content"),
                                f"{where}.content", role, image_urls and role == "user")
        return role, tuple(blocks)
    if kind == "function_call":
        return "assistant", (tool_use_block(item.get("call_id"), _call_name(item, where),
                                            item.get("arguments"), where, "call_id", "name",
                                            "arguments"),)
    if kind == "function_call_output":
        output = _parts(item.get("output"), f"{where}.output")
        return "user", (tool_result_block(item.get("call_id"), output, where,
                                          "call_id", "output", image_urls),)
    if kind == "reasoning":
        # Only signed thinking we produced can go back to the API; other reasoning is dropped.
        block = thinking_block(item.get("encrypted_content"))
        return ("assistant", (block,)) if block else None
    if kind == "item_reference":
        raise bad_request(f"{where}: item references are not supported; send the item itself.",
                          where, "unsupported_parameter")
    raise bad_request(f"{where}: unknown input item type {kind!r}.", f"{where}.type")


def parse_input(value: object, image_urls: bool = False) -> Context:
    if isinstance(value, str):
        return Context((), (("user", (text_block(value),) if value else ()),))
    if not isinstance(value, list):
        raise bad_request("input must be a string or a list of input items.", "input")
    system: list[str] = []
    turns: list[Turn] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object.", where)
        turn = _item_turn(item, where, image_urls, system)
        if turn is not None:
            turns.append(turn)
    return Context(tuple(system), tuple(turns))


def _reasoning(value: object) -> tuple[str | None, bool]:
    """The CLI effort (None: thinking off) and whether summaries are asked for."""
    if value is None:
        return None, False
    if not isinstance(value, dict):
        raise bad_request("reasoning must be an object.", "reasoning")
    summary = value.get("summary", value.get("generate_summary"))
    if summary is not None and (not isinstance(summary, str) or summary not in SUMMARIES):
        raise bad_request(f"reasoning.summary must be one of {sorted(SUMMARIES)}.",
                          "reasoning.summary")
    effort = value.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise bad_request("reasoning.effort must be a string.", "reasoning.effort")
    return effort_of(DEFAULT_EFFORT if effort is None else effort, "reasoning.effort"), \
        summary is not None


def _include(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request("include must be a list of strings.", "include")
    return ENCRYPTED_REASONING in value


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be a boolean.", key)
    return value


def _instructions(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise bad_request("instructions must be a string.", "instructions")
    return value


def _text_format(value: object) -> Any:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("text must be an object.", "text")
    return value.get("format")


def _blocks(blocks: tuple[Block, ...], effort: str | None) -> list[Block]:
    # With thinking off, earlier thinking has nothing to continue: it is not sent.
    if effort is None:
        return [b for b in blocks if b["type"] != "thinking"]
    return list(blocks)


def parse_responses_request(body: dict, previous: Context | None = None,
                            image_urls: bool = False) -> Parsed:
    """`previous`: the stored conversation `previous_response_id` names, if any."""
    model = resolve(body.get("model"))
    _refuse_unsupported(body)
    given = parse_input(body.get("input"), image_urls)
    before = previous or Context()
    context = Context(before.system + given.system, before.turns + given.turns)
    instructions = _instructions(body.get("instructions"))
    effort, summary = _reasoning(body.get("reasoning"))
    conversation = conversation_of([instructions, *context.system],
                                   [(role, _blocks(blocks, effort)) for role, blocks in context.turns],
                                   "input")
    tools, names, left_out = parse_tools(body.get("tools"))
    request = settled(NeutralRequest(
        model=model,
        conversation=conversation,
        stream=_flag(body, "stream", False),
        max_tokens=optional_int(body, "max_output_tokens"),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        output=output_format(_text_format(body.get("text")), "text.format", ""),
        effort=effort,
    ))
    return Parsed(request, context, names, left_out, summary,
                  _include(body.get("include")), _flag(body, "store", True))


def ignored_params(body: dict) -> tuple[str, ...]:
    return tuple(k for k in IGNORED if body.get(k) is not None)
