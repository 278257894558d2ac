"""
Real daemons for the hardening suites: `twistd -n claudeproxy` in its own
process (as a user runs it), spoken to over raw sockets so that a test can send
anything at all, and its CLI processes counted from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from attrs import define, frozen

from tests.integration.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
FAKE_CLI = str(REPO / "tests" / "fake_cli.py")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@frozen
class Response:
    status: int  # 0: the connection closed without an answer
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _dechunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out.append(rest[:n])
        rest = rest[n + 2:]
    return b"".join(out)


def parse_response(data: bytes) -> Response:
    head, sep, body = data.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 1") and sep:  # an interim answer (100 Continue)
        head, sep, body = body.partition(b"\r\n\r\n")
    if not sep:
        return Response(0, {}, data)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(status, headers, body)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (zombies left out)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X"):
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def alive(pids: list[int]) -> list[int]:
    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")

    return [pid for pid in pids if running(pid)]


def wait_for(check, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@define
class RealDaemon:
    proc: subprocess.Popen
    port: int
    log: Path

    def send(self, raw: bytes, timeout: float = 60.0) -> Response:
        """Send raw bytes, read until the server closes (send `connection: close`)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            try:
                s.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it was all sent: the answer is still there to read
            chunks = []
            while True:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                chunks.append(data)
        return parse_response(b"".join(chunks))

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60.0) -> Response:
        head = [f"{method} {path} HTTP/1.1", "host: localhost", "connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            head.append(f"content-length: {len(body)}")
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
        return self.send(raw, timeout)

    def chat(self, content: str, stream: bool = False, timeout: float = 60.0) -> Response:
        body = {"model": "claude-haiku-4", "stream": stream,
                "messages": [{"role": "user", "content": content}]}
        return self.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                            {"content-type": "application/json"}, timeout)

    def health(self) -> dict:
        return self.request("GET", "/health").json()

    def cli_processes(self) -> list[int]:
        return descendants(self.proc.pid)

    def cli_runs(self) -> list[int]:
        """The CLI processes answering requests (not /health's quick probes)."""
        def answering(pid: int) -> bool:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    return b"--input-format" in f.read()
            except OSError:
                return False

        return [pid for pid in self.cli_processes() if answering(pid)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_daemon(tmp_path: Path, *args: str, cli: str = FAKE_CLI,
                 env: dict[str, str] | None = None) -> RealDaemon:
    """`twistd -n claudeproxy` on a free loopback port, answering /health."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp_path / f"daemon-{port}.log"
    environment = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
                   "CLAUDE_CONFIG_DIR": str(home / ".claude"), "PYTHONPATH": str(REPO),
                   **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "claudeproxy", "--claude", cli,
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--state-dir", str(tmp_path / "state"),
             *args], cwd=tmp_path, env=environment, stdout=out, stderr=subprocess.STDOUT)
    daemon = RealDaemon(proc, port, log)

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return daemon.request("GET", "/health", timeout=10).status == 200
        except OSError:
            return False

    if not wait_for(up, 60, 0.1):
        daemon.stop()
        raise AssertionError(f"the daemon did not start: {log.read_text()}")
    return daemon
