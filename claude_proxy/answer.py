"""
One answer, built from the CLI's events in no wire API's terms: its parts in
order (thinking with its signature, text cut at the first stop sequence, the
client's tool calls), why it finished, and usage. The writers feed it; it
returns the pieces to stream (`Out`) and says when the answer is complete,
which can be before the CLI's result line (a tool call, the token limit, a
stop sequence): the run is then ended. Each front door encodes it. Pure.
"""

from __future__ import annotations

import json

from attrs import define, evolve, field, frozen

from claude_proxy.errors import APIError
from claude_proxy.events import (
    AssistantToolUse, Event, MessageDelta, MessageStart, Result, TextDelta, ThinkingDelta,
    ThinkingSignature, ThinkingTokens, ToolInputDelta, ToolPermission, ToolUseStart, Usage,
)
from claude_proxy.stops import StopMatcher
from claude_proxy.tools import client_tool_name

NO_STRUCTURED_OUTPUT = APIError(
    502, "The model did not produce JSON matching the requested schema.", "server_error",
    "invalid_structured_output")

# Why an answer finished, in the API's own words (Anthropic's stop reasons).
END_TURN, MAX_TOKENS, STOP_SEQUENCE, TOOL_USE = "end_turn", "max_tokens", "stop_sequence", "tool_use"


@frozen
class TextOut:
    text: str


@frozen
class ThinkingOut:
    text: str


@frozen
class SignatureOut:
    """The thinking block so far is sealed with this signature."""

    signature: str


@frozen
class CallStart:
    """A client tool call begins: `index` counts calls; `call_id` is the API's tool_use id."""

    index: int
    call_id: str
    name: str
    arguments: str = ""


@frozen
class CallArgs:
    index: int
    arguments: str


Out = TextOut | ThinkingOut | SignatureOut | CallStart | CallArgs


@define
class Part:
    """One block of the answer: "thinking", "text" or "tool_use"."""

    kind: str
    text: str = ""
    signature: str = ""
    call_id: str = ""
    name: str = ""

    @property
    def arguments(self) -> str:
        return self.text  # a tool call's JSON arguments, as they streamed


@define
class Answer:
    stops: tuple[str, ...] = ()
    structured: bool = False
    finish: str | None = field(default=None, init=False)  # set once complete
    stop_sequence: str | None = field(default=None, init=False)  # the stop that cut it
    usage: Usage = field(factory=Usage, init=False)
    error: APIError | None = field(default=None, init=False)
    # The CLI's result replaced text that was already streamed (the API's stream
    # broke and its retry answered differently): a stream cannot take it back.
    diverged: bool = field(default=False, init=False)
    parts: list[Part] = field(factory=list, init=False)
    _matcher: StopMatcher = field(init=False)
    _fed: list[str] = field(factory=list, init=False)  # text given to the stop matcher
    _call_of_block: dict[int, int] = field(factory=dict, init=False)
    _call_parts: list[Part] = field(factory=list, init=False)
    _streamed_tools: set[str] = field(factory=set, init=False)
    _unstreamed_calls: bool = field(default=False, init=False)
    _start_usage: Usage = field(factory=Usage, init=False)
    _message_usage: Usage | None = field(default=None, init=False)  # the last streamed message's
    _thinking_estimate: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._matcher = StopMatcher(self.stops)

    @property
    def complete(self) -> bool:
        return self.finish is not None

    @property
    def start_usage(self) -> Usage:
        """Usage as the API's message_start reported it (input side only)."""
        return self._start_usage

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "text")

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if p.kind == "thinking")

    @property
    def calls(self) -> list[Part]:
        return list(self._call_parts)

    def feed(self, event: Event) -> list[Out]:
        """What this event adds to the answer (nothing once it is complete)."""
        if self.complete:
            return []
        if isinstance(event, TextDelta):
            # With an output schema the answer is the structured tool's input, not prose.
            return [] if self.structured else self._content(event.text)
        if isinstance(event, ThinkingDelta):
            self._part("thinking").text += event.text
            return [ThinkingOut(event.text)]
        if isinstance(event, ThinkingSignature):
            if not self.parts or self.parts[-1].kind != "thinking":
                return []
            self.parts[-1].signature = event.signature
            return [SignatureOut(event.signature)]
        if isinstance(event, ToolUseStart):
            return self._tool_start(event)
        if isinstance(event, ToolInputDelta):
            return self._tool_input(event)
        if isinstance(event, AssistantToolUse):
            return self._whole_call(event)
        if isinstance(event, ToolPermission) and self._unstreamed_calls:
            # No stream showed the message's end (the CLI answered again without
            # streaming); the permission request says the calls are all there.
            self.finish = TOOL_USE
            self.usage = self._start_usage
            return self._flush()
        if isinstance(event, ThinkingTokens):
            self._thinking_estimate = max(self._thinking_estimate, event.estimated)
        elif isinstance(event, MessageStart):
            self._start_usage = event.usage
        elif isinstance(event, MessageDelta):
            self._message_usage = Usage(self._start_usage.input_tokens, event.output_tokens,
                                        self._start_usage.cache_read_tokens,
                                        self._start_usage.cache_creation_tokens)
            return self._message_end(event)
        return []

    def _part(self, kind: str) -> Part:
        """The part being written, if of this kind, else a new one."""
        if not self.parts or self.parts[-1].kind != kind:
            self.parts.append(Part(kind))
        return self.parts[-1]

    def _emit(self, text: str) -> list[Out]:
        if not text:
            return []
        self._part("text").text += text
        return [TextOut(text)]

    def _content(self, text: str) -> list[Out]:
        self._fed.append(text)
        emit, matched = self._matcher.feed(text)
        if matched:
            self._stopped()
        return self._emit(emit)

    def _stopped(self) -> None:
        self.finish = STOP_SEQUENCE
        self.stop_sequence = self._matcher.matched_stop
        self.usage = self._start_usage

    def _tool_start(self, event: ToolUseStart) -> list[Out]:
        name = client_tool_name(event.name)
        if name is None:
            return []
        self._streamed_tools.add(event.tool_id)
        self._call_of_block[event.index] = len(self._call_parts)
        # Text held back as a possible stop sequence belongs before the call.
        return self._flush() + self._new_call(event.tool_id, name, "")

    def _new_call(self, tool_id: str, name: str, arguments: str) -> list[Out]:
        index = len(self._call_parts)
        part = Part("tool_use", arguments, call_id=tool_id, name=name)
        self.parts.append(part)
        self._call_parts.append(part)
        return [CallStart(index, tool_id, name, arguments)]

    def _whole_call(self, event: AssistantToolUse) -> list[Out]:
        name = client_tool_name(event.name)
        if name is None or event.tool_id in self._streamed_tools:
            return []
        self._unstreamed_calls = True
        self._streamed_tools.add(event.tool_id)
        return self._flush() + self._new_call(event.tool_id, name,
                                              json.dumps(event.input or {}, ensure_ascii=False))

    def _tool_input(self, event: ToolInputDelta) -> list[Out]:
        index = self._call_of_block.get(event.index)
        if index is None or not event.partial_json:
            return []
        self._call_parts[index].text += event.partial_json
        return [CallArgs(index, event.partial_json)]

    def _message_end(self, event: MessageDelta) -> list[Out]:
        assert self._message_usage is not None
        if event.stop_reason == TOOL_USE and self._call_parts:
            finish = TOOL_USE
        elif event.stop_reason == MAX_TOKENS:
            # The CLI would ask the model to go on; the client asked for a bound.
            finish = MAX_TOKENS
        else:
            return []
        outs = self._flush()
        if finish == TOOL_USE or self.finish is None:
            self.finish = finish
        self._set_usage(self._message_usage)
        return outs

    def _set_usage(self, usage: Usage) -> None:
        # When the API reports no thinking count, the CLI's own estimate stands in.
        if not usage.reasoning_tokens and self._thinking_estimate:
            usage = evolve(usage, reasoning_tokens=min(self._thinking_estimate, usage.output_tokens))
        self.usage = usage

    def _flush(self) -> list[Out]:
        held = self._matcher.flush()
        if self._matcher.matched and self.finish is None:
            self.finish = STOP_SEQUENCE
            self.stop_sequence = self._matcher.matched_stop
        return self._emit(held)

    def result(self, result: Result) -> list[Out]:
        """
        The CLI's result line: authoritative for text and stop reason, and for
        usage when no stream showed the message's own. Its usage sums every API
        call of the CLI's turn, and a live session's turn that went on with tool
        results holds the calls of earlier requests too.
        """
        if self.complete:
            return []
        self._set_usage(self._message_usage or result.usage)
        if self.structured:
            return self._structured_result(result)
        fed = "".join(self._fed)
        if result.text.startswith(fed):
            # After a failed stream the CLI retries without streaming: text may arrive only here.
            outs = self._content(result.text[len(fed):]) if len(result.text) > len(fed) else []
            if not self.complete:
                outs += self._flush()
        else:
            outs = self._retold(result.text)
        if not self.complete:
            self.finish = TOOL_USE if self._call_parts else (result.stop_reason or END_TURN)
        return outs

    def _retold(self, text: str) -> list[Out]:
        """
        The API's stream broke and the CLI's retry answered anew. What was
        streamed stands if the new answer goes on from it (the rest is sent);
        otherwise the answer is the new text, and `diverged` says a stream
        already sent something else.
        """
        matcher = StopMatcher(self.stops)
        emit, _ = matcher.feed(text)
        final = emit + matcher.flush()
        if matcher.matched:
            self.finish = STOP_SEQUENCE
            self.stop_sequence = matcher.matched_stop
        sent = self.text
        if final.startswith(sent):
            return self._emit(final[len(sent):])
        self.diverged = True
        self.parts = [p for p in self.parts if p.kind != "text"]
        self.parts.insert(0 if not self.parts or self.parts[0].kind != "thinking" else 1,
                          Part("text", final))
        return []

    def _structured_result(self, result: Result) -> list[Out]:
        value = result.structured_output
        if value is None:
            try:
                value = json.loads(result.text)
            except ValueError:
                self.error = NO_STRUCTURED_OUTPUT
                return []
        self.finish = END_TURN
        # Sent whole, once the CLI has checked it against the schema: an attempt
        # it rejects would otherwise already be on the wire.
        return self._emit(json.dumps(value, ensure_ascii=False))
