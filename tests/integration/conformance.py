"""
Whether an answer is what the official SDKs expect: every body, stream event
and error parsed with the openai and anthropic Python SDKs' own pydantic types
(strictly: no coercion, nothing lost when dumped again), no field those types
do not declare (beyond ALLOWED), and each API's stream in its order. Pure:
a response in, what a client of its API made of it out.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Union, get_args

from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from attrs import define, field, frozen
from openai.types import ErrorObject
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as OpenAIResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tests.integration.daemons import Response
from tests.streams import sse

# Fields the SDKs' types lack that an answer may still carry: (type name, field) → why.
ALLOWED = {
    ("ChatCompletionMessage", "reasoning_content"):
        "the thinking (docs/parameters.md), where clients of DeepSeek-style APIs read it; "
        "OpenAI's Chat API has no field for it",
    ("ChoiceDelta", "reasoning_content"): "the same, streamed",
    ("Response", "store"):
        "the real API sends it (its reference's response object shows `store`); the SDK's type "
        "leaves it out",
    ("Response", "output_text"):
        "the SDKs compute it from `output`; sent too for clients that read the raw JSON",
}


def by_type(union: Any) -> Any:
    """
    An SDK's union of events, told apart by their `type` as the SDK does (its own
    marker, which pydantic does not read), so that an event is checked against its
    own type alone.
    """
    members = get_args(get_args(union)[0])
    return Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 (a tuple of types)


ADAPTERS = {kind: TypeAdapter(by_type(kind) if kind in (ResponseStreamEvent, RawMessageStreamEvent)
                              else kind)
            for kind in (ChatCompletion, ChatCompletionChunk, OpenAIResponse, ResponseStreamEvent,
                         ErrorObject, Message, RawMessageStreamEvent, ErrorResponse)}
NAMES = {ResponseStreamEvent: "ResponseStreamEvent", RawMessageStreamEvent: "RawMessageStreamEvent"}
RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


def undeclared(value: Any, path: str = "") -> list[str]:
    """The paths of the fields no type of the SDK declares, in a parsed value."""
    if isinstance(value, BaseModel):
        kind = type(value)
        found = [f"{path}.{key} is not a field of {kind.__name__}"
                 for key in value.model_extra or {} if (kind.__name__, key) not in ALLOWED]
        for name in kind.model_fields:
            found += undeclared(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in undeclared(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in undeclared(item, f"{path}.{key}")]
    return []


@define
class Reader:
    """Parses one answer's parts with the SDK's types, noting every problem."""

    problems: list[str] = field(factory=list)

    def parse(self, kind: Any, data: str | bytes | dict, where: str) -> Any:
        """`data` as the SDK's `kind`, or None (a problem noted) if it is not one."""
        raw = data if isinstance(data, dict) else json.loads(data)
        adapter = ADAPTERS[kind]
        try:
            value = adapter.validate_json(json.dumps(raw), strict=True)
        except ValidationError as e:
            name = NAMES.get(kind) or kind.__name__
            self.problems.append(f"{where}: not a {name}: {str(e)[:800]}")
            return None
        self.problems += [f"{where}: {p}" for p in undeclared(value, type(value).__name__)]
        again = adapter.dump_python(value, mode="json", exclude_unset=True, by_alias=True)
        if again != raw:
            self.problems.append(f"{where}: changed by the SDK's parse: {raw} → {again}")
        return value

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


@frozen
class Read:
    """What a client of an API made of one answer."""

    status: int
    streamed: bool
    finish: str | None  # finish_reason / the response's status / stop_reason
    text: str
    calls: list[tuple[str, str]]  # (name, arguments JSON) of each tool call, in order
    error: str | None  # the error's type, if it failed (before or after a stream began)
    problems: tuple[str, ...]


def read(api: str, response: Response, usage_asked: bool = False) -> Read:
    """An answer of `api` (chat, responses or messages) as its SDK reads it."""
    reader = Reader()
    content_type = response.headers.get("content-type", "")
    if response.status != 200:
        reader.check(content_type.startswith("application/json"), f"content-type {content_type!r}")
        error = (anthropic_error if api == "messages" else openai_error)(reader, response.body, "body")
        return Read(response.status, False, None, "", [], error, tuple(reader.problems))
    if content_type.startswith("text/event-stream"):
        try:
            events = [(e.name, e.data) for e in sse(response.body)]
        except AssertionError as e:  # not SSE at all
            return Read(200, True, None, "", [], None, (str(e),))
        if api == "chat":
            return chat_stream(reader, events, usage_asked)
        return (responses_stream if api == "responses" else messages_stream)(reader, events)
    reader.check(content_type.startswith("application/json"), f"content-type {content_type!r}")
    return {"chat": chat_body, "responses": responses_body, "messages": messages_body}[api](
        reader, response.body)


def openai_error(reader: Reader, data: str | bytes, where: str) -> str | None:
    """OpenAI's `{"error": {message, type, param, code}}`: its type."""
    raw = json.loads(data)
    reader.check(isinstance(raw, dict) and set(raw) == {"error"}, f"{where}: not an OpenAI error")
    error = reader.parse(ErrorObject, raw.get("error") or {}, f"{where}.error")
    return error.type if error else None


def anthropic_error(reader: Reader, data: str | bytes, where: str) -> str | None:
    error = reader.parse(ErrorResponse, data, where)
    return error.error.type if error else None


def done(reader: Reader, *read: Any) -> Read:
    return Read(*read, tuple(reader.problems))


# --- Chat Completions ---

def chat_body(reader: Reader, data: bytes) -> Read:
    body = reader.parse(ChatCompletion, data, "body")
    if body is None:
        return done(reader, 200, False, None, "", [], None)
    reader.check([c.index for c in body.choices] == [0], "not one choice, index 0")
    message = body.choices[0].message
    calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
    return done(reader, 200, False, body.choices[0].finish_reason, message.content or "", calls,
                None)


def chat_stream(reader: Reader, events: list[tuple[str | None, str]], usage_asked: bool) -> Read:
    """Chunks of one id, model and created; one finish_reason; the usage chunk last if asked."""
    chunks, error, ended = [], None, False
    for i, (name, data) in enumerate(events):
        where = f"event {i}"
        reader.check(not ended, f"{where}: after [DONE]")
        reader.check(name is None, f"{where}: named {name!r} (Chat's events have no names)")
        if data == "[DONE]":
            ended = True
            continue
        reader.check(error is None, f"{where}: after the error")
        if "error" in json.loads(data):
            error = openai_error(reader, data, where) or "?"
        elif (chunk := reader.parse(ChatCompletionChunk, data, where)) is not None:
            chunks.append(chunk)
    reader.check(ended, "no [DONE] at the end")
    if not chunks:
        reader.problems.append("no chunk")
        return done(reader, 200, True, None, "", [], error)
    for what in ("id", "model", "created", "system_fingerprint"):
        values = {getattr(c, what) for c in chunks}
        reader.check(len(values) == 1, f"chunks of {len(values)} {what}s: {sorted(map(str, values))}")
    reader.check(bool(chunks[0].choices) and chunks[0].choices[0].delta.role == "assistant",
                 "the first chunk does not give the role")
    finishes = [i for i, c in enumerate(chunks) for choice in c.choices if choice.finish_reason]
    if error is None:
        reader.check(len(finishes) == 1, f"{len(finishes)} chunks with a finish_reason")
    else:
        reader.check(not finishes, "a finish_reason on a stream that failed")
    after = chunks[finishes[0] + 1:] if finishes else []
    reader.check(all(not c.choices for c in after), "a choice after the finish_reason")
    with_usage = [i for i, c in enumerate(chunks) if c.usage is not None]
    if usage_asked and error is None:
        reader.check(with_usage == [len(chunks) - 1] and not chunks[-1].choices,
                     f"usage asked for, but in chunks {with_usage} of {len(chunks)}, "
                     "not alone in the last")
    else:
        reader.check(not with_usage, f"usage in chunks {with_usage}, not asked for")
    text, calls = [], []
    for c in chunks:
        for choice in c.choices:
            reader.check(choice.index == 0, f"a choice of index {choice.index}")
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or []:
                if call.index == len(calls):  # a new call: all of its head at once
                    reader.check(bool(call.id) and call.type == "function" and call.function
                                 and call.function.name, f"call {call.index} starts headless")
                    calls.append([call.function.name if call.function else "", ""])
                else:
                    reader.check(call.index == len(calls) - 1 and not call.id and not call.type
                                 and not (call.function and call.function.name),
                                 f"a delta of call {call.index} while call {len(calls) - 1} "
                                 "streams, or its head again")
                if call.function and call.function.arguments and call.index < len(calls):
                    calls[call.index][1] += call.function.arguments
    finish = chunks[finishes[0]].choices[0].finish_reason if finishes else None
    return done(reader, 200, True, finish, "".join(text), [tuple(c) for c in calls], error)


# --- Responses ---

def responses_body(reader: Reader, data: bytes) -> Read:
    body = reader.parse(OpenAIResponse, data, "body")
    if body is None:
        return done(reader, 200, False, None, "", [], None)
    calls = [(o.name, o.arguments) for o in body.output if o.type == "function_call"]
    return done(reader, 200, False, body.status, body.output_text, calls, None)


@define
class _OpenItem:
    """An output item between its added and done events."""

    id: str
    parts: dict[int, list[str]] = field(factory=dict)  # an open part's texts, by content index
    closed: set[int] = field(factory=set)
    summaries: dict[int, list[str]] = field(factory=dict)
    arguments: list[str] = field(factory=list)


def responses_stream(reader: Reader, events: list[tuple[str | None, str]]) -> Read:
    """Numbered from 0; created, in_progress, items each added → done, then one end."""
    parsed = []
    for i, (name, data) in enumerate(events):
        event = reader.parse(ResponseStreamEvent, data, f"event {i}")
        if event is not None:
            reader.check(name == event.type, f"event {i}: named {name!r}, of type {event.type}")
            parsed.append(event)
    kinds = [e.type for e in parsed]
    reader.check([e.sequence_number for e in parsed] == list(range(len(events))),
                 "sequence numbers are not 0, 1, 2, …")
    reader.check(kinds[:2] == ["response.created", "response.in_progress"],
                 f"begins with {kinds[:2]}")
    ends = [i for i, k in enumerate(kinds) if k in RESPONSE_ENDS]
    reader.check(ends == [len(parsed) - 1], f"ends {[kinds[i] for i in ends]} at {ends} of {len(parsed)}")
    if len(parsed) < 3 or not ends:
        return done(reader, 200, True, None, "", [], None)
    responses = [e.response for e in parsed if hasattr(e, "response")]
    reader.check(len({r.id for r in responses}) == 1, "the response changes its id")
    opened: dict[int, _OpenItem] = {}
    items: list[Any] = []  # each done item, by output index
    for i, event in enumerate(parsed[2:-1], 2):
        where = f"event {i} ({event.type})"
        at = getattr(event, "output_index", None)
        if event.type == "response.output_item.added":
            reader.check(at == len(items) + len(opened) and not opened,
                         f"{where}: output_index {at} while {sorted(opened)} open, {len(items)} done")
            opened[at] = _OpenItem(event.item.id)
            continue
        item = opened.get(at)
        if item is None:
            reader.problems.append(f"{where}: output_index {at} is not an open item")
            continue
        reader.check(getattr(event, "item_id", item.id) == item.id, f"{where}: another item's id")
        if event.type == "response.output_item.done":
            reader.check(event.item.id == item.id, f"{where}: another item's id")
            reader.check(not item.parts and not item.summaries, f"{where}: a part still open")
            items.append(event.item)
            del opened[at]
        else:
            item_event(reader, where, item, event)
    end = parsed[-1]
    if end.type != "response.failed":  # a failure may cut an item short
        reader.check(not opened, f"items {sorted(opened)} never done")
        final = [o.model_dump(mode="json", exclude_unset=True) for o in end.response.output]
        reader.check(final == [o.model_dump(mode="json", exclude_unset=True) for o in items],
                     "the final output is not the items done")
    error = end.response.error.code if end.response.error else None
    text = "".join(c.text for o in items if o.type == "message" for c in o.content
                   if c.type == "output_text")
    calls = [(o.name, o.arguments) for o in items if o.type == "function_call"]
    return done(reader, 200, True, end.response.status, text, calls, error)


def item_event(reader: Reader, where: str, item: _OpenItem, event: Any) -> None:
    """One event inside an open item: its parts added → deltas → done, in order."""
    kind = event.type
    if kind == "response.content_part.added":
        index = event.content_index
        reader.check(index == len(item.closed) + len(item.parts) and not item.parts,
                     f"{where}: content_index {index} out of order")
        item.parts[index] = [getattr(event.part, "text", "")]
    elif kind in ("response.output_text.delta", "response.output_text.done",
                  "response.content_part.done"):
        texts = item.parts.get(event.content_index)
        if texts is None:
            reader.problems.append(f"{where}: content_index {event.content_index} is not open")
        elif kind == "response.output_text.delta":
            texts.append(event.delta)
        else:
            whole = event.text if kind == "response.output_text.done" else event.part.text
            reader.check(whole == "".join(texts), f"{where}: not its deltas joined")
            if kind == "response.content_part.done":
                del item.parts[event.content_index]
                item.closed.add(event.content_index)
    elif kind == "response.reasoning_summary_part.added":
        reader.check(event.summary_index not in item.summaries, f"{where}: added twice")
        item.summaries[event.summary_index] = []
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                  "response.reasoning_summary_part.done"):
        texts = item.summaries.get(event.summary_index)
        if texts is None:
            reader.problems.append(f"{where}: summary_index {event.summary_index} is not open")
        elif kind.endswith(".delta"):
            texts.append(event.delta)
        else:
            whole = event.text if kind.endswith("text.done") else event.part.text
            reader.check(whole == "".join(texts), f"{where}: not its deltas joined")
            if kind.endswith("part.done"):
                del item.summaries[event.summary_index]
    elif kind == "response.function_call_arguments.delta":
        item.arguments.append(event.delta)
    elif kind == "response.function_call_arguments.done":
        reader.check(event.arguments == ("".join(item.arguments) or event.arguments),
                     f"{where}: not its deltas joined")
    else:
        reader.problems.append(f"{where}: unexpected inside an item")


# --- Messages ---

def messages_body(reader: Reader, data: bytes) -> Read:
    body = reader.parse(Message, data, "body")
    if body is None:
        return done(reader, 200, False, None, "", [], None)
    text = "".join(b.text for b in body.content if b.type == "text")
    calls = [(b.name, json.dumps(b.input)) for b in body.content if b.type == "tool_use"]
    return done(reader, 200, False, body.stop_reason, text, calls, None)


DELTAS = {"text": "text_delta", "tool_use": "input_json_delta",
          "thinking": ("thinking_delta", "signature_delta")}


def messages_stream(reader: Reader, events: list[tuple[str | None, str]]) -> Read:
    """message_start; each block start → deltas → stop in index order; message_delta; message_stop."""
    parsed, error = [], None
    for i, (name, data) in enumerate(events):
        where = f"event {i}"
        kind = json.loads(data).get("type")
        reader.check(name == kind, f"{where}: named {name!r}, of type {kind!r}")
        if kind == "ping":  # the SDK skips it
            reader.check(json.loads(data) == {"type": "ping"} and i > 0, f"{where}: {data}")
        elif kind == "error":
            reader.check(i == len(events) - 1, f"{where}: not the last event")
            error = anthropic_error(reader, data, where) or "?"
        elif (event := reader.parse(RawMessageStreamEvent, data, where)) is not None:
            parsed.append(event)
    kinds = [e.type for e in parsed]
    reader.check(kinds[:1] == ["message_start"], f"begins with {kinds[:1]}")
    if error is None:
        reader.check(kinds[-2:] == ["message_delta", "message_stop"], f"ends with {kinds[-2:]}")
    reader.check(kinds.count("message_delta") <= 1 and kinds.count("message_stop") <= 1,
                 "message_delta or message_stop more than once")
    if not kinds or kinds[0] != "message_start":
        return done(reader, 200, True, None, "", [], error)
    start = parsed[0].message
    reader.check(start.content == [] and start.stop_reason is None, "message_start is not empty")
    blocks: list[Any] = []
    texts: list[list[str]] = []
    open_block = None
    finish = None
    for i, event in enumerate(parsed[1:], 1):
        where = f"event {i} ({event.type})"
        if event.type == "content_block_start":
            reader.check(open_block is None and event.index == len(blocks),
                         f"{where}: index {event.index}, block {open_block} open")
            open_block = event.index
            blocks.append(event.content_block)
            texts.append([])
        elif event.type == "content_block_delta":
            if event.index != open_block:
                reader.problems.append(f"{where}: index {event.index}, block {open_block} open")
                continue
            allowed = DELTAS.get(blocks[open_block].type, ())
            reader.check(event.delta.type in allowed,
                         f"{where}: {event.delta.type} in a {blocks[open_block].type} block")
            texts[open_block].append(getattr(event.delta, "text", None)
                                     or getattr(event.delta, "partial_json", ""))
        elif event.type == "content_block_stop":
            reader.check(event.index == open_block, f"{where}: index {event.index}, "
                                                    f"block {open_block} open")
            open_block = None
        elif event.type == "message_delta":
            reader.check(open_block is None, f"{where}: block {open_block} still open")
            finish = event.delta.stop_reason
        elif event.type == "message_stop":
            reader.check(i == len(parsed) - 1, f"{where}: not the last")
    text = "".join("".join(t) for b, t in zip(blocks, texts) if b.type == "text")
    calls = []
    for block, pieces in zip(blocks, texts):
        if block.type == "tool_use":
            arguments = "".join(pieces)
            try:
                reader.check(isinstance(json.loads(arguments or "{}"), dict),
                             f"call {block.name}: its input is not an object")
            except ValueError:
                reader.problems.append(f"call {block.name}: its input is not JSON: {arguments!r}")
            calls.append((block.name, arguments))
    return done(reader, 200, True, finish, text, calls, error)
