"""
The real Claude Code CLI as a client of the daemon's Messages API: two CLI
processes of the same binary, each with its own environment. The client runs
in a scratch HOME with ANTHROPIC_BASE_URL pointing at the daemon and a dummy
API key; the daemon's own CLI (started by the daemon, its environment built by
plan.py) answers against the mock API, whose directives reach it through the
client's prompt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.test_fidelity import settled

CLIENT_TIMEOUT = 90.0


def client_env(root: Path, daemon_url: str) -> dict[str, str]:
    """The client CLI's environment: nothing of the daemon's (or the machine's) setup."""
    home = root / "home"
    (home / ".claude").mkdir(parents=True)
    (root / "tmp").mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CLAUDE_CODE_TMPDIR": str(root / "tmp"),
        "ANTHROPIC_BASE_URL": daemon_url,
        "ANTHROPIC_API_KEY": "sk-client-dummy",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        # Any call it would make past the daemon fails at once instead of leaving the machine.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }


async def run_client(cli: str, root: Path, daemon_url: str, prompt: str, *args: str) -> dict:
    work = root / "work"
    work.mkdir(parents=True)
    d = getProcessOutputAndValue(
        cli, ["-p", prompt, "--output-format", "json", "--model", "sonnet", *args],
        env=client_env(root, daemon_url), path=str(work))
    d.addTimeout(CLIENT_TIMEOUT, reactor)
    out, err, code = await d
    assert code == 0, (out, err)
    return json.loads(out)


@pytest_twisted.ensureDeferred
async def test_claude_code_one_turn(daemon, mock_api, cli_path, tmp_path):
    result = await run_client(cli_path, tmp_path / "client", daemon.url, "say hi through the proxy")
    assert result["is_error"] is False
    assert result["result"] == "MOCK REPLY to: say hi through the proxy"
    await settled(daemon)
    [request] = mock_api.requests
    # Claude Code's own system prompt and tools reached the model through the daemon.
    assert "Claude" in json.dumps(request.body["system"])
    assert "mcp__client__Write" in [t["name"] for t in request.body["tools"]]


@pytest_twisted.ensureDeferred
async def test_claude_code_runs_the_tool_the_model_asks_for(daemon, mock_api, cli_path, tmp_path):
    root = tmp_path / "client"
    target = root / "work" / "hello.txt"
    spec = json.dumps([{"name": "Write", "input": {"file_path": str(target),
                                                   "content": "written by Claude Code\n"}}])
    result = await run_client(cli_path, root, daemon.url,
                              f"write the file [[mock:tools calls='{spec}']]",
                              "--allowedTools", "Write")
    assert result["is_error"] is False
    assert target.read_text() == "written by Claude Code\n"  # the client really ran its tool
    assert result["result"].startswith("MOCK REPLY to:")
    await settled(daemon)
    _, second = mock_api.requests
    sent = [m for m in second.body["messages"] if m["role"] != "system"]
    [use] = [b for b in sent[-2]["content"] if b["type"] == "tool_use"]
    assert use["name"] == "mcp__client__Write" and use["input"]["file_path"] == str(target)
    [tool_result] = [b for b in sent[-1]["content"] if b["type"] == "tool_result"]
    assert tool_result["tool_use_id"] == use["id"]
    assert "hello.txt" in json.dumps(tool_result["content"])
