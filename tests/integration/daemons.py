"""
Real daemons for the hardening suites: `twistd -n claudeproxy` in its own
process (as a user runs it), spoken to over raw sockets so that a test can send
anything at all, and its CLI processes counted from /proc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from attrs import define, frozen

from tests.integration.conftest import free_port
from tests.streams import sse

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


# --- The three wire APIs as a client speaks them (the fault matrix and the load test) ---

WIRE_APIS = ("chat", "responses", "messages")
_ERROR_SUFFIX = re.compile(r"\((\w+)\)$")


def wire_request(api: str, text: str, stream: bool) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and headers of a one-message request to one of the wire APIs."""
    headers = {"content-type": "application/json"}
    if api == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": text}]}
    elif api == "responses":
        path, body = "/v1/responses", {"input": text, "store": False}
    elif api == "messages":
        path, body = "/v1/messages", {"max_tokens": 1024,
                                      "messages": [{"role": "user", "content": text}]}
        headers["anthropic-version"] = "2023-06-01"
    else:
        raise ValueError(api)
    body = {"model": "claude-haiku-4", "stream": stream, **body}
    return path, json.dumps(body).encode(), headers


@frozen
class Reply:
    """What a client of one wire API made of a response."""

    status: int  # 0: no answer at all (closed, or still silent at the deadline)
    headers: dict[str, str]
    streamed: bool  # a 200 event stream
    text: str  # the answer's text (a stream's deltas joined)
    finish: str | None  # finish_reason / the response's status / stop_reason
    complete: bool  # the answer says it is whole
    error: dict | None  # {"status", "type", "code" (None in Anthropic's shape), "message"}
    # A stream's proper last event: [DONE], response.completed/failed, message_stop or error.
    ended: bool
    problems: tuple[str, ...] = ()  # what a client of that API could not parse or accept
    elapsed: float = 0.0


def _error_of(api: str, status: int, body: object) -> tuple[dict | None, list[str]]:
    """The error of an error body, checked against its API's shape."""
    problems = []
    if api == "messages":
        ok = isinstance(body, dict) and body.get("type") == "error" \
            and isinstance(body.get("error"), dict) and isinstance(body["error"].get("type"), str)
        if not ok:
            return None, [f"not an Anthropic error: {body!r:.200}"]
        return {"status": status, "type": body["error"]["type"], "code": None,
                "message": body["error"].get("message")}, problems
    ok = isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict) \
        and set(body["error"]) >= {"message", "type", "param", "code"}
    if not ok:
        return None, [f"not an OpenAI error: {body!r:.200}"]
    error = body["error"]
    return {"status": status, **{k: error[k] for k in ("type", "code", "message")}}, problems


def read_reply(api: str, response: Response, elapsed: float = 0.0) -> Reply:
    """A response as a client of `api` reads it: text, finish, error, and anything malformed."""
    headers = response.headers
    streamed = response.status == 200 and headers.get("content-type", "").startswith(
        "text/event-stream")
    if response.status != 200:
        try:
            body = response.json()
        except ValueError:
            body = response.body[:200]
        error, problems = _error_of(api, response.status, body)
        if response.status and not headers.get("content-type", "").startswith("application/json"):
            problems.append(f"content-type {headers.get('content-type')!r}")
        return Reply(response.status, headers, False, "", None, False, error, True,
                     tuple(problems), elapsed)
    if not streamed:
        body = response.json()
        if api == "chat":
            choice = body["choices"][0]
            text, finish = choice["message"].get("content") or "", choice["finish_reason"]
            complete = finish == "stop"
        elif api == "responses":
            text = "".join(part.get("text", "") for item in body["output"]
                           if item.get("type") == "message" for part in item["content"])
            finish = body["status"]
            complete = finish == "completed"
        else:
            text = "".join(b.get("text", "") for b in body["content"] if b.get("type") == "text")
            finish = body["stop_reason"]
            complete = finish == "end_turn"
        return Reply(200, headers, False, text, finish, complete, None, True, (), elapsed)
    try:
        events = sse(response.body.decode("utf-8", "replace"))
    except AssertionError as e:  # not SSE at all
        return Reply(200, headers, True, "", None, False, None, False, (str(e),), elapsed)
    return _read_stream(api, headers, events, elapsed)


def _read_stream(api: str, headers: dict, events: list, elapsed: float) -> Reply:
    texts, finish, error, ended, problems = [], None, None, False, []
    for event in events:
        name, data = event.name, event.data
        if ended:
            problems.append(f"an event after the stream's end: {data[:100]}")
            break
        if api == "chat":
            if data == "[DONE]":
                ended = True
                continue
            obj = json.loads(data)
            if "error" in obj:
                error, bad = _error_of(api, 200, obj)
                problems += bad
                continue
            if error is not None:
                problems.append("a chunk after the error")
            for choice in obj.get("choices", []):
                texts.append(choice["delta"].get("content") or "")
                finish = choice.get("finish_reason") or finish
            continue
        obj = json.loads(data)
        kind = obj.get("type")
        if api == "responses":
            if kind == "response.output_text.delta":
                texts.append(obj["delta"])
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                ended = True
                finish = obj["response"]["status"]
                if kind == "response.failed":
                    failed = obj["response"]["error"] or {}
                    found = _ERROR_SUFFIX.search(failed.get("message", ""))
                    error = {"status": 200, "type": failed.get("type"),
                             "code": found.group(1) if found else None,
                             "message": failed.get("message")}
            elif kind == "error":
                problems.append(f"a bare error event: {data[:200]}")
            continue
        # messages
        if name != kind:
            problems.append(f"event name {name!r} is not its data's type {kind!r}")
        if kind == "content_block_delta" and obj["delta"].get("type") == "text_delta":
            texts.append(obj["delta"]["text"])
        elif kind == "message_delta":
            finish = obj["delta"].get("stop_reason")
        elif kind == "message_stop":
            ended = True
        elif kind == "error":
            error, bad = _error_of(api, 200, obj)
            problems += bad
            ended = True
    if error is not None and api == "chat" and not ended:
        problems.append("no [DONE] after the error")
    if not ended:
        problems.append("the stream ended without its last event")
    complete = error is None and ended and finish in ("stop", "completed", "end_turn")
    return Reply(200, headers, True, "".join(texts), finish, complete, error, ended,
                 tuple(problems), elapsed)


def ask(daemon: RealDaemon, api: str, text: str, stream: bool, deadline: float = 60.0) -> Reply:
    """One request to a wire API; no answer within `deadline` seconds is status 0."""
    path, body, headers = wire_request(api, text, stream)
    head = [f"POST {path} HTTP/1.1", "host: localhost", "connection: close",
            f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    started = time.monotonic()
    end = started + deadline
    chunks = []
    try:
        # One deadline for the whole answer: heartbeats must not keep a hung stream alive.
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=deadline) as s:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            while True:
                s.settimeout(max(0.01, end - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as e:  # socket.timeout included
        got = b"".join(chunks)[-200:]
        return Reply(0, {}, False, "", None, False, None, False,
                     (f"no whole answer in {deadline:g} s: {e!r}; got {got!r}",),
                     time.monotonic() - started)
    return read_reply(api, parse_response(b"".join(chunks)), time.monotonic() - started)


def settled(daemon: RealDaemon) -> bool:
    """No slot held, nothing queued, no CLI process running."""
    health = daemon.health()
    return health["in_flight"] == 0 and health["queued"] == 0 and not daemon.cli_processes()


@define
class MockAPI:
    """tests/mock_anthropic.py in its own process (the tests' threads block the reactor)."""

    proc: subprocess.Popen
    base_url: str

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_mock_api() -> MockAPI:
    proc = subprocess.Popen([sys.executable, "-m", "tests.mock_anthropic", "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise AssertionError(f"the mock API did not start: {line!r}")
    return MockAPI(proc, f"http://127.0.0.1:{int(line.split()[1])}")
