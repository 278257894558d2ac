"""
The neutral request: what any wire API's request comes to once its front door
has parsed it, and all the core (plan, runner, answer) knows of it. Pure.
"""

from __future__ import annotations

import json

from attrs import evolve, frozen

from claude_proxy.conversation import Conversation
from claude_proxy.errors import bad_request
from claude_proxy.models import ALIASES, ModelChoice
from claude_proxy.tools import Tool, ToolChoice

# The schema goes to the CLI's argv (--json-schema), where one string is capped at 128 KiB.
MAX_SCHEMA_BYTES = 64 * 1024
# The CLI's --effort levels.
EFFORTS = ("low", "medium", "high", "xhigh", "max")


@frozen
class OutputFormat:
    """A JSON Schema the answer must match (the CLI's --json-schema)."""

    schema: dict


def output_schema(schema: object, param: str) -> OutputFormat:
    if not isinstance(schema, dict):
        raise bad_request(f"{param} must be a JSON Schema object.", param)
    if len(json.dumps(schema, separators=(",", ":"))) > MAX_SCHEMA_BYTES:
        raise bad_request(f"{param} is over {MAX_SCHEMA_BYTES} bytes.", param)
    return OutputFormat(schema)


@frozen
class Request:
    model: ModelChoice
    conversation: Conversation
    stream: bool = False
    max_tokens: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    output: OutputFormat | None = None
    stop: tuple[str, ...] = ()
    effort: str | None = None  # the CLI's --effort; None: thinking off

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


def settled(request: Request) -> Request:
    """
    A request made consistent for the API, whatever door it came through:
    without tools, tool blocks in the history become text (the API refuses
    them without definitions); and thinking goes off inside a tool loop unless
    the last call's signed thinking block can go back with it, which the API
    then wants. CLI 2.1.330 replays a history turn's thinking block only when
    the turn names the model it runs, and history turns name the CLI's
    --model: an alias (`sonnet`) never is the resolved id, so with an alias
    the block is lost (measured).
    """
    conversation = request.conversation
    if not request.tools and conversation.uses_tools():
        conversation = conversation.tools_as_text()
    effort = request.effort
    if effort is not None and conversation.ends_tool_loop() and not (
            conversation.last_call_signed() and request.model.cli_model not in ALIASES):
        effort = None
    if conversation is request.conversation and effort == request.effort:
        return request
    return evolve(request, conversation=conversation, effort=effort)
