"""
The plugin as a user meets it: `twistd claudeproxy` in a real process.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.integration.conftest import free_port, login

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


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
    port = free_port()
    (tmp_path / ".claude").mkdir()
    login(tmp_path)  # /health is 503 while the CLI is not logged in
    env = {**os.environ, "HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / ".claude")}
    proc = subprocess.Popen([*TWISTD, "-n", "--pidfile=", "claudeproxy", "--claude", cli_path,
                             "--listen", f"tcp:{port}:interface=127.0.0.1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out  # a graceful stop, not twistd's re-raised signal
    assert "Server Shut Down." in out
