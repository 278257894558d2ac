"""
The real OpenAI Codex CLI (npm `@openai/codex`, pinned, on Node 24) through the
daemon's Responses API, the real Claude Code CLI and the mock API: one plain
turn, and one turn in which Codex runs the command the model asks for.
tests/install-node-client.sh installs it; tox points CLAUDE_PROXY_TEST_CODEX at it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.integration.daemons import node_client
from tests.integration.test_api_refusals import TOO_LONG, subscription  # noqa: F401 (a fixture)
from tests.integration.test_fidelity import api_messages

# The provider config docs/clients.md documents.
CONFIG = """\
model = "claude-sonnet-4"
model_provider = "claude-proxy"
check_for_update_on_startup = false

[model_providers.claude-proxy]
name = "claude-proxy (Claude subscription)"
base_url = "{base_url}/v1"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0

[analytics]
enabled = false
"""


class Run(ProcessProtocol):
    """A process with its stdin closed (`codex exec` reads more prompt from an open one)."""

    def __init__(self) -> None:
        self.out, self.err = b"", b""
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


async def run_codex(daemon, tmp_path: Path, prompt: str, resume: bool = False,
                    ok: bool = True, config: str = "") -> tuple[list[dict], Path]:
    """
    One `codex exec --json` turn in a scratch directory (with `resume`, the next turn of
    its last session there); its JSON events and the directory. `ok`: whether the turn
    must succeed (else it must fail). `config`: top-level keys added to the config.
    """
    codex = node_client("CLAUDE_PROXY_TEST_CODEX", "codex")
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(config + CONFIG.format(base_url=daemon.url))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {
        "PATH": codex.path, "HOME": str(tmp_path), "CODEX_HOME": str(codex_home),
        # Offline: anything but the daemon goes to a closed port.
        "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
    }
    run = Run()
    reactor.spawnProcess(run, codex.executable,
                         [codex.executable, "exec", *(["resume", "--last"] if resume else []),
                          "--json", "--skip-git-repo-check",
                          "--dangerously-bypass-approvals-and-sandbox", prompt],
                         env=env, path=str(work))
    code = await run.ended
    assert (code == 0) == ok, (run.out.decode()[-3000:], run.err.decode()[-3000:])
    lines = run.out.decode().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")], work


def final_message(events: list[dict]) -> str:
    texts = [e["item"]["text"] for e in events if e.get("type") == "item.completed"
             and e["item"].get("type") == "agent_message"]
    assert texts, events
    return texts[-1]


@pytest_twisted.ensureDeferred
async def test_one_turn_with_the_real_codex(daemon, mock_api, tmp_path):
    events, _ = await run_codex(daemon, tmp_path, "Say hello to the proxy.")
    assert final_message(events).startswith("MOCK REPLY to: Say hello to the proxy.")
    [request] = mock_api.requests
    offered = {t["name"] for t in request.body["tools"]}
    assert "mcp__client__exec_command" in offered
    assert not [n for n in offered if "web_search" in n]  # a hosted tool, left out


@pytest_twisted.ensureDeferred
async def test_codex_runs_the_command_the_model_asks_for(daemon, mock_api, tmp_path):
    call = json.dumps([{"name": "exec_command", "input": {"cmd": "echo hi from codex > out.txt"}}])
    events, work = await run_codex(
        daemon, tmp_path, f"Write the file. [[mock:tools calls='{call}']]")
    assert (work / "out.txt").read_text() == "hi from codex\n"
    assert final_message(events).startswith("MOCK REPLY to:")

    first, second = mock_api.requests
    assistant, user = api_messages(second)[-2:]
    [tool_use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
    assert tool_use["name"] == "mcp__client__exec_command"
    assert tool_use["input"] == {"cmd": "echo hi from codex > out.txt"}
    [result] = [b for b in user["content"] if b["type"] == "tool_result"]
    assert result["tool_use_id"] == tool_use["id"]
    assert "Process exited with code 0" in json.dumps(result["content"])


@pytest.mark.parametrize("thinking", [False, True], ids=["plain", "thinking"])
@pytest_twisted.ensureDeferred
async def test_a_codex_task_and_its_follow_up_run_in_one_cli(daemon, mock_api, tmp_path, thinking):
    # Three steps, as a task goes: make a file, change it, read it; then `exec resume`.
    steps = json.dumps([[{"name": "exec_command", "input": {"cmd": cmd}}] for cmd in (
        "echo one > notes.txt", "echo two >> notes.txt", "cat notes.txt")]).replace("]]", "] ]")
    flag = " thinking=1" if thinking else ""
    events, work = await run_codex(daemon, tmp_path, f"Keep notes. [[mock:steps calls='{steps}'{flag}]]")
    assert (work / "notes.txt").read_text() == "one\ntwo\n"
    assert final_message(events).startswith("MOCK REPLY to:")
    events, _ = await run_codex(daemon, tmp_path, "And now?", resume=True)
    assert final_message(events) == "MOCK REPLY to: And now?"

    requests = mock_api.requests
    assert len(requests) == 5  # three steps, the answer, the follow-up
    # The inner CLI names its session in every API request: one CLI ran it all.
    assert len({r.session_id for r in requests}) == 1 and requests[0].session_id
    # Codex asks for reasoning: the model thinks in every step, the tool-result ones too.
    assert all(r.body.get("thinking", {}).get("type") == "adaptive" for r in requests)
    [result] = [b for b in requests[3].body["messages"][-1]["content"]
                if b["type"] == "tool_result"]
    assert "one\\ntwo" in json.dumps(result["content"])
    sessions = daemon.runner.sessions
    seen = sessions.snapshot()
    assert seen.continued == 4 and not seen.fallbacks


def turn_failure(events: list[dict]) -> str:
    [failed] = [e for e in events if e.get("type") == "turn.failed"]
    return failed["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_codex_is_told_of_a_context_overflow(daemon, mock_api, tmp_path):
    events, _ = await run_codex(daemon, tmp_path, f"Go on. {TOO_LONG}", ok=False)
    # As against OpenAI's API: Codex's own words for context_length_exceeded.
    assert "ran out of room in the model's context window" in turn_failure(events)
    assert len(mock_api.requests) == 1


@pytest_twisted.ensureDeferred
async def test_codex_names_a_usage_limit_and_its_reset(start_daemon, mock_api, subscription,
                                                       tmp_path):
    daemon = start_daemon(api_key=False)
    reset = int(time.time()) + 7200
    limit = f"[[mock:error status=429 unified_reset={reset} unified_claim=five_hour]]"
    events, _ = await run_codex(daemon, tmp_path, f"Hello. {limit}", ok=False)
    message = turn_failure(events)
    assert message.startswith("You\u2019ve hit your usage limit. Try again at "), message


@pytest_twisted.ensureDeferred
async def test_codex_compacts_at_the_threshold_its_config_gives(daemon, mock_api, tmp_path):
    # docs/clients.md: Claude's window and a compaction threshold for Codex. A tiny threshold
    # here, so that the mock's usage figures pass it after one turn.
    limits = "model_context_window = 200000\nmodel_auto_compact_token_limit = 10\n"
    await run_codex(daemon, tmp_path, "First question.", config=limits)
    events, _ = await run_codex(daemon, tmp_path, "Second question.", resume=True, config=limits)
    assert final_message(events).startswith("MOCK REPLY to:")
    first, compaction, second = mock_api.requests
    # Codex compacts itself, with an ordinary request through the daemon; the next turn
    # carries its summary (what the model answered to that request) and the new question.
    assert "CONTEXT CHECKPOINT COMPACTION" in json.dumps(api_messages(compaction)[-1])
    assert "MOCK REPLY to: You are performing a CONTEXT CHECKPOINT COMPACTION" in json.dumps(
        api_messages(second)) and "Second question." in json.dumps(api_messages(second)[-1])
