"""
The plugin as a user meets it: `twistd claudeproxy` in a real process.
"""

import os
import socket
import subprocess

from tests.integration.daemons import TWISTD, login, start_twistd


def twistd(*args, env=None, **kw):
    return subprocess.run([*TWISTD, *args], capture_output=True, text=True, timeout=60,
                          env=env or os.environ, **kw)


def test_twistd_lists_the_plugin():
    assert "claudeproxy" in twistd("--help").stdout


def test_port_in_use_exits_nonzero_with_a_clear_message(cli_path, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = twistd("-n", "--pidfile=", "claudeproxy", "--claude", cli_path,
                      "--listen", f"tcp:{port}:interface=127.0.0.1", cwd=tmp_path)
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_missing_cli_exits_nonzero_with_install_hint(tmp_path):
    done = twistd("-n", "--pidfile=", "claudeproxy", "--claude", str(tmp_path / "nope"),
                  cwd=tmp_path)
    assert done.returncode != 0
    assert "npm install -g @anthropic-ai/claude-code" in done.stdout + done.stderr


def test_foreground_serves_and_stops_on_sigterm(cli_path, tmp_path):
    (tmp_path / "home" / ".claude").mkdir(parents=True)
    login(tmp_path / "home")  # /health is 503 while the CLI is not logged in
    daemon = start_twistd(tmp_path, cli=cli_path)
    try:
        assert daemon.request("GET", "/health", timeout=30).status == 200
    finally:
        code = daemon.stop()
    out = daemon.log.read_text()
    assert code == 0, out  # a graceful stop, not twistd's re-raised signal
    assert "Server Shut Down." in out
