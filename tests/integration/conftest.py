"""
End-to-end fixtures over tests/integration/daemons.py: the mock Anthropic API
(in the test reactor, or in a process of its own), a scratch HOME, and daemons
built by the `claudeproxy` twistd plugin driving the real Claude Code CLI.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.integration.daemons import Daemon, build_daemon, find_cli, start_mock_api
from tests.mock_anthropic import MockAnthropic


@pytest.fixture(scope="session")
def cli_path() -> str:
    return find_cli()


@pytest.fixture
def mock_api():
    mock = MockAnthropic(reactor)
    mock.listen()
    yield mock
    pytest_twisted.blockon(mock.stop())


@pytest.fixture
def mock_process():
    """The mock API in its own process, for a daemon that is one too; its base URL."""
    mock = start_mock_api()
    yield mock.base_url
    mock.stop()


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


@pytest.fixture
def start_daemon(cli_path, home, mock_api, tmp_path):
    """Start a daemon with extra options; the mock API and an API key are its defaults."""
    started = []
    numbers = count()

    def start(*args: str, api_key: bool = True) -> Daemon:
        cli_env = ["--cli-env", f"ANTHROPIC_BASE_URL={mock_api.base_url}"]
        if api_key:
            cli_env += ["--cli-env", "ANTHROPIC_API_KEY=sk-test"]
        daemon = build_daemon(cli_path, "--cli-retries", "0", *cli_env, *args,
                              state_dir=tmp_path / f"state-{next(numbers)}")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        pytest_twisted.blockon(daemon.service.stopService())


@pytest.fixture
def daemon(start_daemon) -> Daemon:
    return start_daemon()
