"""
The real OpenClaw agent in its `anthropic-messages` provider mode: one
headless turn with one tool round trip through the daemon's Messages API.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.conftest import node_client
from tests.integration.test_fidelity import api_messages
from tests.integration.test_openclaw import openclaw_config


@pytest_twisted.ensureDeferred
async def test_openclaw_in_anthropic_messages_mode(daemon, mock_api, tmp_path):
    openclaw = node_client("CLAUDE_PROXY_TEST_OPENCLAW", "openclaw")
    config = openclaw_config(daemon.url)
    # The anthropic SDK inside OpenClaw adds /v1/messages to the base URL itself.
    config["models"]["providers"]["claude-proxy"].update(baseUrl=daemon.url, api="anthropic-messages")
    (tmp_path / "openclaw.json").write_text(json.dumps(config))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.txt").write_text("hello from the workspace file\n")
    (tmp_path / "openclaw-home").mkdir()
    call = json.dumps([{"name": "read", "input": {"path": "hello.txt"}}])
    out, err, code = await getProcessOutputAndValue(
        openclaw.executable,
        ["agent", "exec", "--config", str(tmp_path / "openclaw.json"), "--cwd", str(workspace),
         "--model", "claude-proxy/claude-sonnet-4", "--timeout", "120", "--json",
         f"Read hello.txt and tell me what it says. [[mock:tools calls='{call}']]"],
        env={"PATH": openclaw.path, "HOME": str(tmp_path / "openclaw-home"),
             "CI": "true"},
        path=str(tmp_path), reactor=reactor)
    assert code == 0, err.decode()[-2000:]
    envelope = json.loads(out)
    assert envelope["ok"] is True and envelope["toolSummary"]["tools"] == ["read"]
    assert envelope["final"].startswith("MOCK REPLY to:")
    _, second = mock_api.requests
    assistant, user = api_messages(second)[-2:]
    [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert tool_use["name"] == "mcp__client__read"
    [result] = [b for b in user["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == tool_use["id"]
    assert "hello from the workspace file" in json.dumps(result["content"])
