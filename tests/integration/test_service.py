"""
The daemon as a long-running service: a real daemonized `twistd` with a
pidfile, keys re-read on SIGHUP, a graceful SIGTERM; and the refusals that
keep others out (non-loopback without a key, cross-origin, oversized bodies).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest_twisted

from tests.integration.daemons import TWISTD, alive, listening_port, start_twistd, wait_for
from tests.streams import DONE, data_events

CHAT = "/v1/chat/completions"
HAIKU = "claude-haiku-4"
PROMPT = "hi, words for the model alone"  # must never reach a log


def _request(url, body=None, headers=None) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(url, data=data, headers={
        "content-type": "application/json", **(headers or {})})


def http(url, body=None, headers=None, timeout=30):
    try:
        with urllib.request.urlopen(_request(url, body, headers), timeout=timeout) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


def stream_in_thread(url, body, headers=None) -> tuple[threading.Thread, threading.Event, dict]:
    """
    A streamed request read in a thread; the event is set once its headers are in
    (the stream has begun), the dict holds its status and whole body in the end.
    """
    got: dict = {}
    begun = threading.Event()

    def read() -> None:
        try:
            with urllib.request.urlopen(_request(url, body, headers), timeout=60) as response:
                got["status"] = response.status
                begun.set()
                got["body"] = response.read()
        finally:
            begun.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, begun, got


def processes_under(directory: Path) -> list[int]:
    """Processes whose working directory is inside `directory` (the CLI runs' scratch dirs)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(Path(os.readlink(entry / "cwd"))).startswith(str(directory)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def start_daemonized(tmp_path, cli_path, mock_url, *extra):
    """`twistd claudeproxy` as a daemon (no -n): its pid from its pidfile, its port from its log."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    env = {**os.environ, "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
           "TMPDIR": str(scratch)}
    pidfile, logfile = tmp_path / "claude-proxy.pid", tmp_path / "claude-proxy.log"
    # A stale pidfile, as a crash leaves it: twistd sees the process is gone and carries on.
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(str(dead.pid))
    done = subprocess.run(
        [*TWISTD, "--pidfile", str(pidfile), "--logfile", str(logfile), "claudeproxy",
         "--claude", cli_path, "--listen", "tcp:0:interface=127.0.0.1", "--cli-retries", "0",
         "--cli-env", f"ANTHROPIC_BASE_URL={mock_url}", "--cli-env", "ANTHROPIC_API_KEY=sk-test",
         *extra],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() not in ("", str(dead.pid)),
             30)
    pid = int(pidfile.read_text())
    port = wait_for(lambda: logfile.exists() and listening_port(logfile.read_text()), 30)
    return f"http://127.0.0.1:{port}", pid, pidfile, logfile, scratch


def test_daemon_mode_keys_reload_and_graceful_stop(tmp_path, cli_path, mock_process):
    keys = tmp_path / "keys"
    keys.write_text("# one key a line\nsk-first\n")
    base, pid, pidfile, logfile, scratch = start_daemonized(
        tmp_path, cli_path, mock_process, "--api-key-file", str(keys), "--shutdown-grace", "20")
    chat = {"model": HAIKU, "messages": [{"role": "user", "content": PROMPT}]}
    status, _, headers = http(base + CHAT, chat, {"authorization": "Bearer sk-first"})
    assert status == 200 and headers["x-request-id"]
    assert http(base + CHAT, chat)[0] == 401

    keys.write_text("sk-second\n")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: http(base + "/v1/models", headers={"x-api-key": "sk-second"})[0] == 200, 30)
    assert http(base + "/v1/models", headers={"x-api-key": "sk-first"})[0] == 401
    assert alive([pid])  # SIGHUP reloads, it does not stop the daemon

    # A stream in flight when SIGTERM arrives finishes within the grace period.
    slow = {**chat, "stream": True,
            "messages": [{"role": "user", "content": "slowly [[mock:slow delay=0.25]]"}]}
    reader, begun, got = stream_in_thread(base + CHAT, slow, {"x-api-key": "sk-second"})
    assert begun.wait(60) and got["status"] == 200
    os.kill(pid, signal.SIGTERM)
    reader.join(timeout=60)
    events = data_events(got["body"])
    assert events[-1] == DONE
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert "MOCK REPLY to: slowly" in "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1])

    wait_for(lambda: not alive([pid]), 30)
    assert not pidfile.exists()
    assert processes_under(scratch) == []
    log = logfile.read_text()
    assert "stopping gracefully" in log
    assert PROMPT not in log


def test_sigterm_past_the_grace_ends_streams_with_an_error_and_exits_0(tmp_path, cli_path,
                                                                        mock_process):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    daemon = start_twistd(tmp_path, "--cli-retries", "0",
                          "--cli-env", f"ANTHROPIC_BASE_URL={mock_process}",
                          "--cli-env", "ANTHROPIC_API_KEY=sk", "--shutdown-grace", "1",
                          cli=cli_path, env={"TMPDIR": str(scratch)})
    try:
        stalled = {"model": HAIKU, "stream": True,
                   "messages": [{"role": "user", "content": "wait [[mock:stall]]"}]}
        reader, begun, got = stream_in_thread(daemon.url + CHAT, stalled)
        assert begun.wait(60) and got["status"] == 200  # the stream has begun, then stalls
        daemon.proc.send_signal(signal.SIGTERM)
        reader.join(timeout=60)
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()
    events = data_events(got["body"])
    assert events[-1] == DONE
    assert events[-2]["error"]["code"] == "shutting_down"
    assert processes_under(scratch) == []


def test_listening_beyond_loopback_needs_a_key(cli_path, tmp_path):
    everywhere = "tcp:0"
    done = subprocess.run([*TWISTD, "-n", "--pidfile=", "claudeproxy", "--claude", cli_path,
                           "--listen", everywhere], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode != 0
    assert "--api-key-file" in done.stderr + done.stdout
    assert "--insecure-no-auth" in done.stderr + done.stdout
    keys = tmp_path / "keys"
    keys.write_text("sk-one\n")
    for extra in (("--api-key-file", str(keys)), ("--insecure-no-auth",)):
        done = subprocess.run([*TWISTD, "-n", "--pidfile=", "claudeproxy", "--claude", cli_path,
                               "--listen", "tcp:0:interface=0.0.0.0", *extra, "--version"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0 and "claude-proxy" in done.stdout, done.stderr


@pytest_twisted.ensureDeferred
async def test_cross_origin_post_is_refused_and_no_cli_starts(start_daemon, mock_api):
    daemon = start_daemon("--cors-origin", "http://localhost:5173")
    chat = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "hi"}]}
    response = await daemon.post(CHAT, chat, headers={"origin": "https://attacker.example"})
    assert response.code == 403
    assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert mock_api.requests == [] and daemon.runner.in_flight == 0
    allowed = await daemon.post(CHAT, chat, headers={"origin": "http://localhost:5173"})
    assert allowed.code == 200
    assert allowed.headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:5173"]


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413(start_daemon, mock_api):
    daemon = start_daemon("--max-body-bytes", "2000")
    chat = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = await daemon.post(CHAT, chat)
    assert response.code == 413
    assert (await response.json())["error"]["code"] == "request_too_large"
    assert mock_api.requests == []
    small = await daemon.post(CHAT, {**chat, "messages": [{"role": "user", "content": "hi"}]})
    assert small.code == 200


@pytest_twisted.ensureDeferred
async def test_metrics_over_http(daemon, mock_api):
    chat = {"model": "claude-haiku-4", "messages": [{"role": "user", "content": "hi"}]}
    assert (await daemon.post(CHAT, chat)).code == 200
    text = await (await daemon.get("/metrics")).text()
    for name in ("claude_proxy_requests_total", "claude_proxy_request_duration_seconds_bucket",
                 "claude_proxy_time_to_first_token_seconds_bucket", "claude_proxy_cli_processes",
                 "claude_proxy_queue_depth", "claude_proxy_tokens_total"):
        assert name in text
    assert 'status="200"} 1.0' in text
    health = await (await daemon.get("/health")).json()
    # The tests' CLI signs in with an API key (--cli-env), which /health points out.
    assert health["login"]["method"] == "api_key" and "billed per token" in health["login"]["warning"]
    assert health["uptime_seconds"] >= 0


def test_json_logs_carry_the_access_log_fields(tmp_path, cli_path, mock_process):
    daemon = start_twistd(tmp_path, "--cli-retries", "0",
                          "--cli-env", f"ANTHROPIC_BASE_URL={mock_process}",
                          "--cli-env", "ANTHROPIC_API_KEY=sk",
                          cli=cli_path, twistd=("--logger", "claude_proxy.logs.json"))
    try:
        chat = {"model": HAIKU, "messages": [{"role": "user", "content": "secret words"}]}
        status, _, headers = http(daemon.url + CHAT, chat)
        assert status == 200
    finally:
        daemon.stop()
    out = daemon.log.read_text()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [access] = [r for r in records if r.get("request_id") == headers["x-request-id"]]
    assert (access["status"], access["model"], access["path"]) == (200, HAIKU, CHAT)
    assert access["completion_tokens"] == 7 and access["duration_ms"] >= 0
    assert "secret words" not in out
