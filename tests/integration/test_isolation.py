"""
The user's own Claude Code setup must not reach proxied runs: markers are
planted in CLAUDE.md files, auto-memory, a hook and an MCP server; a control
run of the CLI with its default flags proves every marker is live, then the
same requests through the daemon must show none of them.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.integration.daemons import eventually

MARKERS = ("MARKER-USER-CLAUDE-MD", "MARKER-PROJECT-CLAUDE-MD", "MARKER-AUTO-MEMORY")


def plant(home: Path, project: Path) -> dict[str, Path]:
    config = home / ".claude"
    ran = {"hook": home / "hook-ran", "mcp": home / "mcp-ran"}
    (config / "CLAUDE.md").write_text("Always mention MARKER-USER-CLAUDE-MD.\n")
    project.mkdir(parents=True, exist_ok=True)
    (project / "CLAUDE.md").write_text("Always mention MARKER-PROJECT-CLAUDE-MD.\n")
    slug = re.sub(r"[^A-Za-z0-9]", "-", str(project))
    memory = config / "projects" / slug / "memory"
    memory.mkdir(parents=True)
    (memory / "MEMORY.md").write_text("- The user likes MARKER-AUTO-MEMORY.\n")
    hook = {"hooks": [{"type": "command", "command": f"touch {ran['hook']}"}]}
    (config / "settings.json").write_text(json.dumps({"hooks": {
        "SessionStart": [hook], "UserPromptSubmit": [hook]}}))
    server = {"type": "stdio", "command": "sh", "args": ["-c", f"touch {ran['mcp']}; sleep 2"]}
    (config / ".claude.json").write_text(json.dumps({"mcpServers": {"marker": server}}))
    return ran


def leaked(mock_api) -> set[str]:
    seen = json.dumps([r.body for r in mock_api.requests])
    return {m for m in MARKERS if m in seen}


@pytest_twisted.ensureDeferred
async def test_user_setup_does_not_reach_proxied_runs(start_daemon, home, mock_api, cli_path,
                                                      monkeypatch, tmp_path):
    project = tmp_path / "project"
    ran = plant(home, project)

    # Control: the CLI as a user runs it, in the project, with its default flags.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
           "ANTHROPIC_BASE_URL": mock_api.base_url, "ANTHROPIC_API_KEY": "sk-test",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_MAX_RETRIES": "0"}
    out, err, code = await getProcessOutputAndValue(
        "/bin/sh", ("-c", 'exec "$0" "$@" </dev/null', cli_path, "-p", "hello",
                    "--model", "sonnet", "--output-format", "json"),
        env=env, path=str(project), reactor=reactor)
    assert code == 0, err
    assert leaked(mock_api) == set(MARKERS)
    assert ran["hook"].exists() and ran["mcp"].exists()

    ran["hook"].unlink()
    ran["mcp"].unlink()
    mock_api.reset()
    # Each run's scratch directory sits inside the project, under its CLAUDE.md.
    monkeypatch.setattr(tempfile, "tempdir", str(project))
    daemon = start_daemon()
    for stream in (False, True, True):
        response = await daemon.post("/v1/chat/completions", {
            "model": "claude-sonnet-4", "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]})
        assert response.code == 200
        await response.content()
    assert len(mock_api.requests) == 3
    assert leaked(mock_api) == set()
    assert not ran["hook"].exists() and not ran["mcp"].exists()
    assert all(r.body["tools"] == [] for r in mock_api.requests)
    # With --warm 1 (the default) the third request took a process started ahead of time,
    # so that path is held to the same isolation.
    assert daemon.runner.pool.snapshot().hits == 1
    # Nothing is left behind in the project either, once the daemon has stopped.
    await daemon.service.stopService()
    assert sorted(p.name for p in project.iterdir()) == ["CLAUDE.md"]
