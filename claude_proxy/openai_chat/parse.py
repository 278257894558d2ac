"""
An OpenAI chat completion request → the neutral request. Unknown keys are
ignored, as OpenAI's own clients send many; invalid values get a 400 naming
the param. Pure.
"""

from __future__ import annotations


from claude_proxy.conversation import Block, Conversation, conversation_of, text_block
from claude_proxy.errors import bad_request
from claude_proxy.models import resolve
from claude_proxy.openai_content import (
    content_blocks, effort_of, optional_int, output_format, parse_tool_choice, texts_of,
    tool_result_block, tool_use_block,
)
from claude_proxy.request import NeutralRequest, settled
from claude_proxy.stops import parse_stop
from claude_proxy.tools import Tool, make_tool, unique_tools

# Accepted and documented as ignored: the CLI has no way to pass them on.
IGNORED = (
    "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "logit_bias",
    "user", "metadata", "store", "parallel_tool_calls", "service_tier", "prediction",
)

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SYSTEM_ROLES = frozenset({"system", "developer"})


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("Only n=1 is supported.", "n", "unsupported_parameter")
    if body.get("logprobs") or body.get("top_logprobs"):
        param = "logprobs" if body.get("logprobs") else "top_logprobs"
        raise bad_request("Log probabilities are not available through the Claude Code CLI.",
                          param, "unsupported_parameter")
    modalities = body.get("modalities") or []
    if body.get("audio") or (isinstance(modalities, list) and "audio" in modalities):
        raise bad_request("Audio output is not supported.", "audio", "unsupported_parameter")


def parse_tools(tools: object) -> tuple[Tool, ...]:
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise bad_request("tools must be a list.", "tools")
    parsed = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise bad_request(f"{where}: only tools of type 'function' are supported.", where)
        function = tool.get("function")
        if not isinstance(function, dict):
            raise bad_request(f"{where}.function must be an object.", f"{where}.function")
        parsed.append((where, make_tool(function.get("name"), function.get("description"),
                                        function.get("parameters"), f"{where}.function")))
    return unique_tools(parsed)


def _blocks(message: dict, where: str, image_urls: bool) -> tuple[str, list[Block]]:
    """The Anthropic role and blocks of one OpenAI message."""
    role = message["role"]
    content = message.get("content")
    if role == "user":
        return "user", content_blocks(content, f"{where}.content", role, image_urls)
    if role == "assistant":
        blocks = content_blocks(content, f"{where}.content", role)
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list):
            raise bad_request(f"{where}.tool_calls must be a list.", f"{where}.tool_calls")
        for i, call in enumerate(calls):
            at = f"{where}.tool_calls[{i}]"
            if not isinstance(call, dict):
                raise bad_request(f"{at} must be an object.", at)
            function = call.get("function")
            if not isinstance(function, dict):
                raise bad_request(f"{at}.function.name must be a string.", f"{at}.function.name")
            blocks.append(tool_use_block(call.get("id"), function.get("name"),
                                         function.get("arguments"), at, "id", "function.name",
                                         "function.arguments"))
        legacy = message.get("function_call")
        if isinstance(legacy, dict):
            # Legacy function calls carry no id to pair a result with: both sides go as text.
            blocks.append(text_block(f"[called {legacy.get('name')} with {legacy.get('arguments')}]"))
        return "assistant", blocks
    if role == "tool":
        return "user", [tool_result_block(message.get("tool_call_id"), content, where,
                                          "tool_call_id", "content", image_urls)]
    # The legacy "function" role has no call id to pair with: its output goes as text.
    name = message.get("name", "function")
    texts = texts_of(content_blocks(content, f"{where}.content", role))
    return "user", [text_block(f"[{name} returned]\n" + texts)]


def parse_conversation(messages: object, image_urls: bool = False) -> Conversation:
    """`image_urls`: pass http(s) image URLs on for the API to fetch (else a 400)."""
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list.", "messages")
    system: list[str] = []
    turns: list[tuple[str, list[Block]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object.", where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(ROLES)}.", f"{where}.role")
        if role in SYSTEM_ROLES:
            # Images are refused outside user and tool messages: only text is left.
            system.append(texts_of(content_blocks(message.get("content"), f"{where}.content",
                                                  "system")))
            continue
        turns.append(_blocks(message, where, image_urls))
    return conversation_of(system, turns)


def parse_chat_request(body: dict, image_urls: bool = False) -> NeutralRequest:
    model = resolve(body.get("model"))
    _refuse_unsupported(body)
    conversation = parse_conversation(body.get("messages"), image_urls)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean.", "stream")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
    ):
        raise bad_request("temperature must be a number.", "temperature")
    max_tokens = optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = optional_int(body, "max_tokens")
    tools = parse_tools(body.get("tools"))
    return settled(NeutralRequest(
        model=model,
        conversation=conversation,
        stream=bool(stream),
        max_tokens=max_tokens,
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        output=output_format(body.get("response_format"), "response_format", "json_schema"),
        stop=parse_stop(body.get("stop")),
        effort=effort_of(body.get("reasoning_effort"), "reasoning_effort"),
    ))


def include_usage(body: dict) -> bool:
    """Whether a stream ends with a usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object.", "stream_options")
    return bool(body.get("stream") and options.get("include_usage"))


def ignored_params(body: dict) -> tuple[str, ...]:
    return tuple(k for k in IGNORED if body.get(k) is not None)
