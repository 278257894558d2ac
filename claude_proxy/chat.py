"""
OpenAI chat completions: parse and validate a request body, and shape the
responses (one `chat.completion`, or `chat.completion.chunk`s). Pure.
"""

from __future__ import annotations

import json

from attrs import frozen

from claude_proxy.conversation import Conversation, parse_conversation
from claude_proxy.errors import bad_request
from claude_proxy.events import Usage
from claude_proxy.models import ModelChoice, resolve
from claude_proxy.stops import parse_stop
from claude_proxy.tools import Tool, ToolChoice, parse_tool_choice, parse_tools

# Accepted and documented as ignored: the CLI has no way to pass them on.
IGNORED = (
    "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "logit_bias",
    "user", "metadata", "store", "parallel_tool_calls", "service_tier", "prediction",
)
# The schema goes to the CLI's argv (--json-schema), where one string is capped at 128 KiB.
MAX_SCHEMA_BYTES = 64 * 1024
# OpenAI's reasoning_effort → the CLI's --effort ("none" turns thinking off).
EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh"}

# The CLI's stop reasons, in OpenAI's words.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


@frozen
class ResponseFormat:
    kind: str  # "json_schema" or "json_object"
    schema: dict


@frozen
class ChatRequest:
    """A validated chat completion request, reduced to what the CLI needs."""

    model: ModelChoice
    conversation: Conversation
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    response_format: ResponseFormat | None = None
    stop: tuple[str, ...] = ()
    effort: str | None = None  # the CLI's --effort; None: thinking off
    ignored: tuple[str, ...] = ()

    @property
    def offers_tools(self) -> bool:
        # "none" still offers them when the history holds tool calls: the API
        # refuses tool_use blocks without the tools' definitions.
        if not self.tools:
            return False
        return self.tool_choice.mode != "none" or self.conversation.uses_tools()

    @property
    def system(self) -> str:
        notes = [self.conversation.system]
        if self.offers_tools:
            notes.append(self.tool_choice.instruction() or "")
        return "\n\n".join(n for n in notes if n)


def parse_body(body: bytes) -> dict:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json")
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return parsed


def _optional_int(body: dict, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"{key} must be a positive integer.", key)
    return value


def _response_format(value: object) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object", {"type": "object"})
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be a JSON Schema object.",
                              "response_format.json_schema.schema")
        if len(json.dumps(schema, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
            raise bad_request(f"response_format.json_schema.schema is over {MAX_SCHEMA_BYTES} bytes.",
                              "response_format.json_schema.schema")
        return ResponseFormat("json_schema", schema)
    raise bad_request("response_format.type must be 'text', 'json_object' or 'json_schema'.",
                      "response_format.type")


def _effort(value: object) -> str | None:
    if value is None or value == "none":
        return None
    if value not in EFFORTS:
        raise bad_request(f"reasoning_effort must be one of none, {', '.join(EFFORTS)}.",
                          "reasoning_effort")
    return EFFORTS[value]


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


def parse_chat_request(body: dict, image_urls: bool = False) -> ChatRequest:
    """
    Validate an OpenAI chat completion request. Unknown keys are ignored, as
    OpenAI's own clients send many; invalid values get a 400 naming the param.
    """
    model = resolve(body.get("model"))
    _refuse_unsupported(body)
    conversation = parse_conversation(body.get("messages"), image_urls)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("stream_options must be an object.", "stream_options")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
    ):
        raise bad_request("temperature must be a number.", "temperature")
    max_tokens = _optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens")
    tools = parse_tools(body.get("tools"))
    if not tools and conversation.uses_tools():
        conversation = conversation.tools_as_text()
    effort = _effort(body.get("reasoning_effort"))
    if effort is not None and conversation.ends_tool_loop():
        # With thinking on, the API wants the assistant turn before tool results to
        # begin with its signed thinking block, which OpenAI clients do not send back.
        effort = None
    return ChatRequest(
        model=model,
        conversation=conversation,
        stream=bool(stream),
        include_usage=bool(stream and options.get("include_usage")),
        max_tokens=max_tokens,
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        response_format=_response_format(body.get("response_format")),
        stop=parse_stop(body.get("stop")),
        effort=effort,
        ignored=tuple(k for k in IGNORED if body.get(k) is not None),
    )


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def completion(
    completion_id: str, model: str, created: int, message: dict, finish: str, usage: Usage
) -> dict:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
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
