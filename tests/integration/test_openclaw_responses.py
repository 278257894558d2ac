"""
The real OpenClaw agent in its `openai-responses` provider mode: one headless
turn with one tool round trip through the daemon's Responses API.
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
async def test_one_tool_round_trip_in_openai_responses_mode(daemon, mock_api, tmp_path):
    openclaw = node_client("CLAUDE_PROXY_TEST_OPENCLAW", "openclaw")
    config = openclaw_config(daemon.url)
    # The config docs/clients.md documents: the Chat one with the Responses API.
    config["models"]["providers"]["claude-proxy"]["api"] = "openai-responses"
    (tmp_path / "openclaw.json").write_text(json.dumps(config))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.txt").write_text("hello from the workspace file\n")
    (tmp_path / "openclaw-home").mkdir()
    call = json.dumps([{"name": "read", "input": {"path": "hello.txt"}}])
    prompt = f"Read hello.txt and tell me what it says. [[mock:tools calls='{call}']]"
    env = {"PATH": openclaw.path, "HOME": str(tmp_path / "openclaw-home"),
           "CI": "true"}
    out, err, code = await getProcessOutputAndValue(
        openclaw.executable,
        ["agent", "exec", "--config", str(tmp_path / "openclaw.json"), "--cwd", str(workspace),
         "--model", "claude-proxy/claude-sonnet-4", "--timeout", "120", "--json", prompt],
        env=env, path=str(tmp_path), reactor=reactor)
    assert code == 0, err.decode()[-2000:]
    envelope = json.loads(out)
    assert envelope["ok"] is True and envelope["toolSummary"]["tools"] == ["read"]
    assert envelope["final"].startswith("MOCK REPLY to:")

    first, second = mock_api.requests
    assert "mcp__client__read" in {t["name"] for t in first.body["tools"]}
    assistant, user = api_messages(second)[-2:]
    [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
    [result] = [b for b in user["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == tool_use["id"]
    assert "hello from the workspace file" in json.dumps(result["content"])
