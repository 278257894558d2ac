"""
OpenAI chat completions: parse and validate a request body, and shape the
responses (one `chat.completion`, or `chat.completion.chunk`s). Pure.
"""

from __future__ import annotations

import json

from attrs import frozen

from claude_proxy.errors import bad_request
from claude_proxy.events import Usage
from claude_proxy.models import ModelChoice, resolve

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SYSTEM_ROLES = frozenset({"system", "developer"})
# Accepted so that real clients work, but not yet passed to the model.
NOT_YET_HONOURED = ("tools", "tool_choice", "response_format", "reasoning_effort", "stop")

# The CLI's stop reasons, in OpenAI's words.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


@frozen
class Turn:
    role: str
    text: str


@frozen
class ChatRequest:
    """A validated chat completion request, reduced to what the CLI needs."""

    model: ModelChoice
    system: str
    turns: tuple[Turn, ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    not_honoured: tuple[str, ...] = ()


def parse_body(body: bytes) -> dict:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json")
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return parsed


def _content_text(content: object, param: str, role: str) -> str:
    """
    Flatten message content (a string or a list of parts) to text.
    """
    if content is None:
        if role in ("assistant", "tool", "function"):
            return ""
        raise bad_request(f"{param} must not be null for a {role} message.", param)
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{param} must be a string or a list of content parts.", param)
    texts = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise bad_request(f"{where} must be an object.", where)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{where}.text must be a string.", f"{where}.text")
            texts.append(text)
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        elif kind in ("image_url", "input_image", "input_audio", "file"):
            raise bad_request(f"{where}: content parts of type '{kind}' are not supported yet.",
                              where, "unsupported_content")
        else:
            raise bad_request(f"{where}: unknown content part type {kind!r}.", where)
    return "\n".join(texts)


def _messages(messages: object) -> tuple[str, tuple[Turn, ...]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list.", "messages")
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object.", where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(ROLES)}.", f"{where}.role")
        text = _content_text(message.get("content"), f"{where}.content", role)
        if role in SYSTEM_ROLES:
            system.append(text)
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = json.dumps(message["tool_calls"], separators=(",", ":"))
            text = f"{text}\n[tool calls: {calls}]" if text else f"[tool calls: {calls}]"
        turns.append(Turn(role, text))
    if not turns:
        raise bad_request("messages must contain at least one user message.", "messages")
    if turns[-1].role == "assistant":
        raise bad_request("The last message must not be an assistant message.", "messages")
    return "\n\n".join(system), tuple(turns)


def _optional_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"{key} must be a positive integer.", key)
    return value


def parse_chat_request(body: dict) -> ChatRequest:
    """
    Validate an OpenAI chat completion request. Unknown keys are ignored, as
    OpenAI's own clients send many; invalid values get a 400 naming the param.
    """
    model = resolve(body.get("model"))
    system, turns = _messages(body.get("messages"))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object.", "stream_options")
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("Only n=1 is supported.", "n")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
    ):
        raise bad_request("temperature must be a number.", "temperature")
    max_tokens = _optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens")
    return ChatRequest(
        model=model,
        system=system,
        turns=turns,
        stream=bool(stream),
        include_usage=bool(stream and options.get("include_usage")),
        max_tokens=max_tokens,
        not_honoured=tuple(k for k in NOT_YET_HONOURED if body.get(k)),
    )


def prompt_text(turns: tuple[Turn, ...]) -> str:
    """
    The text of the one user turn the CLI is given.

    A single run of user messages goes as it is. Earlier turns go first as a
    clearly delimited transcript, since each stdin line would be a turn of its own.
    """
    last_reply = max((i for i, t in enumerate(turns) if t.role == "assistant"), default=-1)
    current = "\n\n".join(t.text for t in turns[last_reply + 1:])
    if last_reply < 0:
        return current
    history = "\n\n".join(f"[{t.role}]\n{t.text}" for t in turns[: last_reply + 1])
    return (
        "<conversation_so_far>\n"
        f"{history}\n"
        "</conversation_so_far>\n\n"
        "Continue the conversation above; reply to this latest message:\n\n"
        f"{current}"
    )


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def completion(
    completion_id: str, model: str, created: int, text: str, finish: str, usage: Usage
) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage.to_openai(),
        "system_fingerprint": None,
    }


def chunk(
    completion_id: str, model: str, created: int, delta: dict, finish: str | None = None
) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def usage_chunk(completion_id: str, model: str, created: int, usage: Usage) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage.to_openai(),
    }
