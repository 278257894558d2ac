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

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.test_api_refusals import TOO_LONG
from tests.integration.test_fidelity import settled

CLIENT_TIMEOUT = 90.0


def client_env(root: Path, daemon_url: str) -> dict[str, str]:
    """The client CLI's environment: nothing of the daemon's (or the machine's) setup."""
    home = root / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
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


async def run_client(cli: str, root: Path, daemon_url: str, prompt: str, *args: str,
                     ok: bool = True) -> dict:
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    d = getProcessOutputAndValue(
        cli, ["-p", prompt, "--output-format", "json", "--model", "sonnet", *args],
        env=client_env(root, daemon_url), path=str(work))
    d.addTimeout(CLIENT_TIMEOUT, reactor)
    out, err, code = await d
    assert (code == 0) == ok, (out, err)
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


@pytest.mark.parametrize("thinking", [False, True], ids=["plain", "thinking"])
@pytest_twisted.ensureDeferred
async def test_a_claude_code_task_and_its_follow_up_run_in_one_cli(daemon, mock_api, cli_path,
                                                                   tmp_path, thinking):
    root = tmp_path / "client"
    target, made = root / "work" / "notes.txt", root / "work" / "made.txt"
    # (A command that changes a file Claude Code wrote or read makes it add a note to its
    # system prompt: that step is another conversation to the model, replayed in a new CLI.)
    steps = json.dumps([
        [{"name": "Write", "input": {"file_path": str(target), "content": "one\n"}}],
        [{"name": "Bash", "input": {"command": "echo two > made.txt"}}],
        [{"name": "Read", "input": {"file_path": str(made)}}],
    ]).replace("]]", "] ]")
    flag = " thinking=1" if thinking else ""
    result = await run_client(cli_path, root, daemon.url,
                              f"keep notes [[mock:steps calls='{steps}'{flag}]]",
                              "--allowedTools", "Write,Bash,Read")
    assert result["is_error"] is False and result["result"].startswith("MOCK REPLY to:")
    assert (target.read_text(), made.read_text()) == ("one\n", "two\n")  # it ran each tool
    result = await run_client(cli_path, root, daemon.url, "and now?", "--continue")
    assert result["result"] == "MOCK REPLY to: and now?"
    await settled(daemon)

    requests = mock_api.requests
    assert len(requests) == 5  # three steps, the answer, the follow-up
    # The inner CLI names its session in every API request: one CLI ran it all.
    assert len({r.session_id for r in requests}) == 1 and requests[0].session_id
    # Claude Code asks for adaptive thinking: the model thinks in every step.
    assert all(r.body.get("thinking", {}).get("type") == "adaptive" for r in requests)
    [read] = [b for b in requests[3].body["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert "two" in json.dumps(read["content"])
    sessions = daemon.runner.sessions
    seen = sessions.snapshot()
    assert seen.continued == 4 and not seen.fallbacks


@pytest_twisted.ensureDeferred
async def test_claude_code_reads_a_context_overflow_as_the_apis(daemon, mock_api, cli_path,
                                                                tmp_path):
    result = await run_client(cli_path, tmp_path / "client", daemon.url, f"go on {TOO_LONG}",
                              ok=False)
    # Its own reaction to the API's "prompt is too long" (a one-exchange conversation has
    # nothing to compact; a longer one it would compact and send again).
    assert result["terminal_reason"] == "prompt_too_long", result
    assert result["result"].startswith("Prompt is too long"), result
    await settled(daemon)
    assert len(mock_api.requests) == 1
