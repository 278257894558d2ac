"""
The real OpenClaw agent (npm `openclaw`, on Node 24) through the daemon, the
real CLI and the mock API: one headless turn with one tool round trip, in each of its
provider modes (Chat Completions, Responses, Messages).
tests/install-node-client.sh installs it; tox points CLAUDE_PROXY_TEST_OPENCLAW at it.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.daemons import node_client
from tests.integration.test_fidelity import api_messages


def openclaw_config(base_url: str, api: str = "openai-completions") -> dict:
    # The provider configs docs/clients.md documents; the anthropic SDK inside OpenClaw
    # adds /v1/messages to the base URL itself.
    return {
        "agents": {"defaults": {"model": {"primary": "claude-proxy/claude-sonnet-4"}}},
        "models": {"mode": "merge", "providers": {"claude-proxy": {
            "baseUrl": base_url if api == "anthropic-messages" else f"{base_url}/v1",
            "apiKey": "not-needed",
            "api": api,
            "models": [{"id": "claude-sonnet-4", "name": "Claude Sonnet (subscription)",
                        "reasoning": False, "input": ["text", "image"],
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                        "contextWindow": 200000, "maxTokens": 8192}],
        }}},
    }


@pytest.mark.parametrize("api", ["openai-completions", "openai-responses", "anthropic-messages"])
@pytest_twisted.ensureDeferred
async def test_one_tool_round_trip_with_the_real_openclaw(daemon, mock_api, tmp_path, api):
    openclaw = node_client("CLAUDE_PROXY_TEST_OPENCLAW", "openclaw")
    config = tmp_path / "openclaw.json"
    config.write_text(json.dumps(openclaw_config(daemon.url, api)))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.txt").write_text("hello from the workspace file\n")
    home = tmp_path / "openclaw-home"
    home.mkdir()
    call = json.dumps([{"name": "read", "input": {"path": "hello.txt"}}])
    prompt = f"Read hello.txt and tell me what it says. [[mock:tools calls='{call}']]"
    env = {"PATH": openclaw.path, "HOME": str(home), "CI": "true"}
    out, err, code = await getProcessOutputAndValue(
        openclaw.executable,
        ["agent", "exec", "--config", str(config), "--cwd", str(workspace),
         "--model", "claude-proxy/claude-sonnet-4", "--timeout", "120", "--json", prompt],
        env=env, path=str(tmp_path), reactor=reactor)
    assert code == 0, err.decode()[-2000:]
    envelope = json.loads(out)
    assert envelope["ok"] is True
    assert envelope["toolSummary"]["tools"] == ["read"]
    assert envelope["final"].startswith("MOCK REPLY to:")

    first, second = mock_api.requests
    assert "mcp__client__read" in {t["name"] for t in first.body["tools"]}
    assistant, user = api_messages(second)[-2:]
    [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert (tool_use["name"], tool_use["input"]) == ("mcp__client__read", {"path": "hello.txt"})
    [result] = [b for b in user["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == tool_use["id"]
    assert "hello from the workspace file" in json.dumps(result["content"])
