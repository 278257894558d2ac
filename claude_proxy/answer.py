"""
One answer, built from the CLI's events in OpenAI's terms: content (cut at the
first stop sequence), reasoning_content, tool_calls, the finish reason and
usage. Both writers feed it; it returns the deltas to stream and says when the
answer is complete, which can be before the CLI's result line (a tool call, the
token limit, a stop sequence): the run is then ended. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from attrs import define, evolve, field

from claude_proxy.chat import finish_reason
from claude_proxy.errors import APIError
from claude_proxy.events import (
    AssistantToolUse, Event, MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta,
    ThinkingTokens, ToolInputDelta, ToolPermission, ToolUseStart, Usage,
)
from claude_proxy.stops import StopMatcher
from claude_proxy.tools import client_tool_name, openai_call_id

NO_STRUCTURED_OUTPUT = APIError(
    502, "The model did not produce JSON matching response_format.", "server_error",
    "invalid_structured_output")

Delta = dict[str, Any]


@define
class Answer:
    stops: tuple[str, ...] = ()
    structured: bool = False
    finish: str | None = field(default=None, init=False)  # set once complete
    usage: Usage = field(factory=Usage, init=False)
    error: APIError | None = field(default=None, init=False)
    _matcher: StopMatcher = field(init=False)
    _text: list[str] = field(factory=list, init=False)  # the content
    _fed: list[str] = field(factory=list, init=False)  # text given to the stop matcher
    _reasoning: list[str] = field(factory=list, init=False)
    _calls: list[dict[str, Any]] = field(factory=list, init=False)
    _call_of_block: dict[int, int] = field(factory=dict, init=False)
    _streamed_tools: set[str] = field(factory=set, init=False)
    _unstreamed_calls: bool = field(default=False, init=False)
    _start_usage: Usage = field(factory=Usage, init=False)
    _thinking_estimate: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._matcher = StopMatcher(self.stops)

    @property
    def complete(self) -> bool:
        return self.finish is not None

    def feed(self, event: Event) -> list[Delta]:
        """The deltas this event adds to the answer (none once it is complete)."""
        if self.complete:
            return []
        if isinstance(event, TextDelta):
            # With response_format the answer is the structured tool's input, not prose.
            return [] if self.structured else self._content(event.text)
        if isinstance(event, ThinkingDelta):
            self._reasoning.append(event.text)
            return [{"reasoning_content": event.text}]
        if isinstance(event, ToolUseStart):
            return self._tool_start(event)
        if isinstance(event, ToolInputDelta):
            return self._tool_input(event)
        if isinstance(event, AssistantToolUse):
            return self._whole_call(event)
        if isinstance(event, ToolPermission) and self._unstreamed_calls:
            # No stream showed the message's end (the CLI answered again without
            # streaming); the permission request says the calls are all there.
            self.finish = "tool_calls"
            self.usage = self._start_usage
            return self._flush()
        if isinstance(event, ThinkingTokens):
            self._thinking_estimate = max(self._thinking_estimate, event.estimated)
        elif isinstance(event, MessageStart):
            self._start_usage = event.usage
        elif isinstance(event, MessageDelta):
            return self._message_end(event)
        return []

    def _content(self, text: str) -> list[Delta]:
        self._fed.append(text)
        emit, matched = self._matcher.feed(text)
        if matched:
            self.finish = "stop"
            self.usage = self._start_usage
        if emit:
            self._text.append(emit)
            return [{"content": emit}]
        return []

    def _tool_start(self, event: ToolUseStart) -> list[Delta]:
        name = client_tool_name(event.name)
        if name is None:
            return []
        self._streamed_tools.add(event.tool_id)
        self._call_of_block[event.index] = len(self._calls)
        # Text held back as a possible stop sequence belongs before the call.
        return self._flush() + self._new_call(event.tool_id, name, "")

    def _new_call(self, tool_id: str, name: str, arguments: str) -> list[Delta]:
        index = len(self._calls)
        call_id = openai_call_id(tool_id)
        self._calls.append({"id": call_id, "type": "function",
                            "function": {"name": name, "arguments": arguments}})
        return [{"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                 "function": {"name": name, "arguments": arguments}}]}]

    def _whole_call(self, event: AssistantToolUse) -> list[Delta]:
        name = client_tool_name(event.name)
        if name is None or event.tool_id in self._streamed_tools:
            return []
        self._unstreamed_calls = True
        self._streamed_tools.add(event.tool_id)
        return self._flush() + self._new_call(event.tool_id, name,
                                              json.dumps(event.input or {}, ensure_ascii=False))

    def _tool_input(self, event: ToolInputDelta) -> list[Delta]:
        index = self._call_of_block.get(event.index)
        if index is None or not event.partial_json:
            return []
        self._calls[index]["function"]["arguments"] += event.partial_json
        return [{"tool_calls": [{"index": index, "function": {"arguments": event.partial_json}}]}]

    def _message_end(self, event: MessageDelta) -> list[Delta]:
        if event.stop_reason == "tool_use" and self._calls:
            finish = "tool_calls"
        elif event.stop_reason == "max_tokens":
            # The CLI would ask the model to go on; the client asked for a bound.
            finish = "length"
        else:
            return []
        deltas = self._flush()
        if finish == "tool_calls" or self.finish is None:
            self.finish = finish
        self._set_usage(Usage(self._start_usage.input_tokens, event.output_tokens,
                              self._start_usage.cache_read_tokens,
                              self._start_usage.cache_creation_tokens))
        return deltas

    def _set_usage(self, usage: Usage) -> None:
        # When the API reports no thinking count, the CLI's own estimate stands in.
        if not usage.reasoning_tokens and self._thinking_estimate:
            usage = evolve(usage, reasoning_tokens=min(self._thinking_estimate, usage.output_tokens))
        self.usage = usage

    def _flush(self) -> list[Delta]:
        held = self._matcher.flush()
        if self._matcher.matched and self.finish is None:
            self.finish = "stop"
        if held:
            self._text.append(held)
            return [{"content": held}]
        return []

    def result(self, result: Result) -> list[Delta]:
        """The CLI's result line: authoritative for text, usage and stop reason."""
        if self.complete:
            return []
        self._set_usage(result.usage)
        if self.structured:
            return self._structured_result(result)
        deltas, replaced = [], None
        fed = "".join(self._fed)
        # After a failed stream the CLI retries without streaming: text may arrive only here.
        if result.text.startswith(fed) and len(result.text) > len(fed):
            deltas = self._content(result.text[len(fed):])
        elif not result.text.startswith(fed):
            replaced = self._cut(result.text)
        if not self.complete:
            deltas += self._flush()
            self.finish = "tool_calls" if self._calls else finish_reason(result.stop_reason)
        if replaced is not None:
            # The whole answer from here on (message()); a stream has sent what it sent.
            self._text = [replaced]
        return deltas

    def _cut(self, text: str) -> str:
        """A whole text cut at the first stop sequence (finish "stop" if one is found)."""
        matcher = StopMatcher(self.stops)
        emit, _ = matcher.feed(text)
        emit += matcher.flush()
        if matcher.matched:
            self.finish = "stop"
        return emit

    def _structured_result(self, result: Result) -> list[Delta]:
        value = result.structured_output
        if value is None:
            try:
                value = json.loads(result.text)
            except ValueError:
                self.error = NO_STRUCTURED_OUTPUT
                return []
        self.finish = "stop"
        # Sent whole, once the CLI has checked it against the schema: an attempt
        # it rejects would otherwise already be on the wire.
        text = json.dumps(value, ensure_ascii=False)
        self._text.append(text)
        return [{"content": text}]

    def message(self) -> dict[str, Any]:
        """The assistant message of a non-streamed completion."""
        # With response_format, _text holds only the checked JSON: text deltas are ignored then.
        content = "".join(self._text)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": content or (None if self._calls else ""),
                                   "refusal": None}
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [
                {**c, "function": {**c["function"], "arguments": c["function"]["arguments"] or "{}"}}
                for c in self._calls]
        return message
