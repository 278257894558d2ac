"""The neutral request, settled the same way whatever door it came through."""

import pytest

from claude_proxy.conversation import Conversation, Message
from claude_proxy.models import resolve
from claude_proxy.plan import CLISettings, build_plan
from claude_proxy.request import NeutralRequest, settled
from claude_proxy.tools import Tool

CALL = {"type": "tool_use", "id": "toolu_1", "name": "mcp__client__read", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "r"}]}
SIGNED = {"type": "thinking", "thinking": "t", "signature": "c2ln"}
READ = (Tool("read", "", {"type": "object"}),)


def tool_loop(*reply):
    return Conversation("", (Message("user", ({"type": "text", "text": "q"},)),
                             Message("assistant", reply), Message("user", (RESULT,))))


@pytest.mark.parametrize("model, aliases, reply, effort", [
    ("claude-sonnet-5-5", {}, (SIGNED, CALL), "high"),  # the block goes back: thinking stays on
    ("claude-sonnet-5-5", {}, (CALL,), None),           # no block to send back
    ("sonnet", {}, (SIGNED, CALL), None),               # an alias: the CLI drops the block
    ("claude-sonnet-4", {}, (SIGNED, CALL), None),      # a family id is an alias too
    # once the CLI has said what the alias runs, it runs under that id and the block goes back
    ("claude-sonnet-4", {"sonnet": "claude-sonnet-5-5"}, (SIGNED, CALL), "high"),
])
def test_a_cold_replay_inside_a_tool_loop(model, aliases, reply, effort):
    request = settled(NeutralRequest(resolve(model), tool_loop(*reply), tools=READ, effort="high"))
    assert request.effort == "high"  # as asked: a live session keeps thinking on
    plan = build_plan(request, CLISettings("/bin/claude"), {}, aliases)
    assert plan.cold_settings.effort == effort and plan.settings.effort == "high"


def test_without_tools_the_loop_is_text_and_thinking_stays():
    request = settled(NeutralRequest(resolve("sonnet"), tool_loop(CALL), effort="high"))
    assert not request.conversation.uses_tools()
    assert request.effort == "high"
