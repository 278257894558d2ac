"""
`count_tokens` without the API: an estimate of a request's input tokens from
its size, for editors that ask many times at start-up and only want a ballpark
(how full the context is). Never runs the CLI. Pure.

The rule (docs/messages.md): about 4 characters a token over the system
prompt, every text, tool call (name and JSON input) and tool definition (name,
description, JSON schema); a flat cost per image (the API scales an image to
at most ~1.15 megapixels, about 1,600 tokens; most screenshots reach it); a
few tokens a message for the turn markers; and the API's own tool-use system
prompt when tools are offered.
"""

from __future__ import annotations

import json
from math import ceil

from claude_proxy.conversation import Block
from claude_proxy.request import NeutralRequest

CHARS_PER_TOKEN = 4
IMAGE_TOKENS = 1600
MESSAGE_TOKENS = 4
# The system prompt the API adds when tools are offered (Anthropic's pricing
# page: 346 tokens for auto/none with Claude 4 models).
TOOL_SYSTEM_TOKENS = 346


def _chars(block: Block) -> tuple[int, int]:
    """The characters of a block's text, and its number of images."""
    kind = block["type"]
    if kind == "text":
        return len(block["text"]), 0
    if kind == "image":
        return 0, 1
    if kind == "thinking":
        return len(block["thinking"]), 0
    if kind == "tool_use":
        return len(block["name"]) + len(json.dumps(block["input"], ensure_ascii=False)), 0
    if kind == "tool_result":
        chars = images = 0
        for inner in block["content"]:
            c, i = _chars(inner)
            chars, images = chars + c, images + i
        return chars, images
    return 0, 0  # redacted thinking: not counted by the API either


def estimate(request: NeutralRequest) -> int:
    chars = len(request.system)
    images = 0
    for message in request.conversation.messages:
        for block in message.content:
            c, i = _chars(block)
            chars, images = chars + c, images + i
    tools = 0
    if request.offers_tools:
        tools = TOOL_SYSTEM_TOKENS
        chars += sum(len(t.name) + len(t.description)
                     + len(json.dumps(t.parameters, ensure_ascii=False)) for t in request.tools)
    return (ceil(chars / CHARS_PER_TOKEN) + images * IMAGE_TOKENS + tools
            + MESSAGE_TOKENS * len(request.conversation.messages))
