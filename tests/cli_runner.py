"""Run the real Claude Code CLI once against a mock API and collect its stream-json output.

The CLI gets an environment of only what it needs, so nothing of the caller's login, settings or
telemetry leaks into a test, and all its state lives in a scratch directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

# Headless, streaming, and isolated from user settings, tools and MCP servers.
CLI_ARGS = (
    "-p",
    "--verbose",
    "--output-format",
    "stream-json",
    "--input-format",
    "stream-json",
    "--include-partial-messages",
    "--model",
    "sonnet",
    "--tools",
    "",
    "--strict-mcp-config",
    "--setting-sources",
    "",
    "--no-session-persistence",
)


def cli_env(scratch: Path, base_url: str | None, api_key: str | None = "sk-test") -> dict[str, str]:
    """The CLI's whole environment: a scratch home/config, the mock as API, and no retries or telemetry."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "CLAUDE_CONFIG_DIR": str(scratch),
        "CLAUDE_CODE_TMPDIR": str(scratch),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        # Without this a 401/429/5xx is retried for minutes.
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    if base_url is not None:
        env["ANTHROPIC_BASE_URL"] = base_url
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    return env


def user_line(content: str | list[dict[str, Any]]) -> bytes:
    """One stream-json input line carrying a user turn."""
    return (json.dumps({"type": "user", "message": {"role": "user", "content": content}}) + "\n").encode()


@frozen
class CliRun:
    """What one CLI run printed."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None  # None when killed by a signal
    timed_out: bool

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def result(self) -> dict[str, Any]:
        """The last `result` line (the end of the turn)."""
        results = [line for line in self.lines if line.get("type") == "result"]
        assert results, f"no result line; stderr: {self.stderr.decode(errors='replace')[-2000:]}"
        return results[-1]

    def stream_events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The raw Anthropic SSE events the CLI re-emitted (optionally only one type)."""
        events = [line["event"] for line in self.lines if line.get("type") == "stream_event"]
        return [e for e in events if event_type is None or e.get("type") == event_type]

    def text_deltas(self) -> list[str]:
        return [
            e["delta"]["text"]
            for e in self.stream_events("content_block_delta")
            if e["delta"].get("type") == "text_delta"
        ]


@define
class _Collector(ProcessProtocol):
    stdin: bytes
    timeout: float
    reactor: Any
    done: Deferred[CliRun] = field(factory=Deferred)
    _out: list[bytes] = field(factory=list)
    _err: list[bytes] = field(factory=list)
    # (marker, seconds): once the output holds the marker, the run has that long left.
    then: tuple[bytes, float] | None = None
    _timer: Any = None
    _timed_out: bool = False

    def connectionMade(self) -> None:
        self.transport.write(self.stdin)
        self.transport.closeStdin()
        self._timer = self.reactor.callLater(self.timeout, self._kill)

    def _kill(self) -> None:
        self._timer = None
        self._timed_out = True
        self.transport.signalProcess("KILL")

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)
        if self.then is not None and self._timer is not None \
                and self.then[0] in b"".join(self._out):
            self._timer.cancel()
            self._timer = self.reactor.callLater(self.then[1], self._kill)
            self.then = None

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        if self._timer is not None:
            self._timer.cancel()
        exit_code = reason.value.exitCode if reason.check(ProcessDone, ProcessTerminated) else None
        self.done.callback(CliRun(b"".join(self._out), b"".join(self._err), exit_code, self._timed_out))


def run_cli(
    reactor: Any,
    cli: str,
    scratch: Path,
    stdin: bytes,
    base_url: str | None,
    extra_args: tuple[str, ...] = (),
    api_key: str | None = "sk-test",
    extra_env: dict[str, str] | None = None,
    timeout: float = 20.0,
    then: tuple[bytes, float] | None = None,
) -> Deferred[CliRun]:
    """Spawn the CLI in `scratch` (also its home and config dir), feed `stdin`, close it, and collect
    the output. The process is killed after `timeout` seconds (a stalled API hangs it forever), or
    `then[1]` seconds after its output first holds `then[0]`: a window that starts once the CLI
    has come that far, however long it took to start."""
    scratch.mkdir(parents=True, exist_ok=True)
    env = cli_env(scratch, base_url, api_key) | (extra_env or {})
    protocol = _Collector(stdin, timeout, reactor, then=then)
    reactor.spawnProcess(protocol, cli, [cli, *CLI_ARGS, *extra_args], env=env, path=str(scratch))
    return protocol.done
