"""
The neutral request: what any wire API's request comes to once its front door
has parsed it, and all the core (plan, runner, answer) knows of it. Pure.
"""

from __future__ import annotations

import json

from attrs import evolve, frozen

from claude_proxy.conversation import Conversation
from claude_proxy.errors import bad_request
from claude_proxy.models import ModelChoice
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
class NeutralRequest:
    """A request to any wire API as the core sees it (twisted.web's Request is the HTTP one)."""

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


def settled(request: NeutralRequest) -> NeutralRequest:
    """
    A request made consistent for the API, whatever door it came through:
    without tools, tool blocks in the history become text (the API refuses
    them without definitions). Whether thinking can stay on is the plan's to
    say (plan.cold_settings): inside a live CLI it always can.
    """
    conversation = request.conversation
    if not request.tools and conversation.uses_tools():
        return evolve(request, conversation=conversation.tools_as_text())
    return request
