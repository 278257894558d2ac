"""
One CLI process and its stream-json conversation, for its whole life:

    starting → ready → turn ⇄ tools → idle → turn … → ended

- starting: spawned, the `initialize` control request written; ready once the
  CLI has answered it (a warm pool's session waits here for its first turn).
- turn: a turn's lines are written; history lines the CLI acknowledges with a
  result line are followed by the next batch, the last one is answered.
- tools: the model called client tools and the CLI asks for permission to run
  the first (can_use_tool). The request is held: the next request's tool
  results are the answer (allow, then the MCP tools/call gets the result), and
  the same CLI turn goes on.
- idle: the turn's result line came; the CLI waits on stdin for the next turn.
- ended: the process has exited and its scratch directory is gone.

The session decides nothing about requests: one listener at a time (a run)
gets its events; whoever holds it between runs (the warm pool, the live
sessions) only watches `exited`. The account's quota reports go to `on_quota`
whether or not a run listens: they come after the answer's last event.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.logger import Logger

from claude_proxy.cli_lifetime import Tether, send_signal
from claude_proxy.continuation import ToolResult, canonical_id
from claude_proxy.events import (
    AssistantToolUse, ControlRequest, ControlResponse, Event, MessageStart, RateLimit, Result,
    ToolPermission, ToolUseStart, parse_line,
)
from claude_proxy.models import Aliases
from claude_proxy.plan import RunPlan, TurnSettings
from claude_proxy.process import LineProcessProtocol, ProcessReactor
from claude_proxy.tools import INITIALIZE_ID, client_tool_name, initialize_request, mcp_answer

log = Logger()

STARTING, READY, TURN, TOOLS, IDLE, ENDED = "starting", "ready", "turn", "tools", "idle", "ended"
BARE_INITIALIZE = json.dumps(initialize_request(()), separators=(",", ":")).encode() + b"\n"


class SessionListener(Protocol):
    """What a session reports a turn to (a run)."""

    def session_output(self) -> None:
        """Bytes came from the CLI (it is not silent)."""

    def session_event(self, event: Event) -> None:
        """An event of the turn: the answer's, the turn's result, a held tool call."""

    def session_broken(self) -> None:
        """The CLI wrote a runaway line; the session is being ended."""

    def session_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        """The process exited."""


def control_line(body: dict) -> bytes:
    return json.dumps({"type": "control_response", "response": body},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def control_answer(plan: RunPlan, event: ControlRequest) -> bytes:
    """The answer to a control request of the CLI's that no held tool call is waiting for."""
    if event.subtype == "mcp_message" and isinstance(event.request.get("message"), dict):
        return control_line({"subtype": "success", "request_id": event.request_id,
                             "response": {"mcp_response": mcp_answer(plan.tools,
                                                                     event.request["message"])}})
    return control_line({"subtype": "error", "request_id": event.request_id,
                         "error": f"The proxy does not handle {event.subtype!r}."})


def settings_line(request_id: str, plan: RunPlan, settings: TurnSettings) -> bytes:
    """The control request that gives a running CLI a turn's settings."""
    return json.dumps({"type": "control_request", "request_id": request_id, "request": {
        "subtype": "apply_flag_settings", "settings": settings.flag_settings(plan.env)}},
        separators=(",", ":")).encode("utf-8") + b"\n"


def spawn(reactor: ProcessReactor, plan: RunPlan, settings: TurnSettings,
          protocol: LineProcessProtocol, scratch_root: str | None, tether: Tether | None = None,
          ) -> tuple[IProcessTransport, str]:
    """
    Start the CLI for a plan in a private scratch directory (its system prompt
    file, CLAUDE_CODE_TMPDIR and CLAUDE_CONFIG_DIR inside), tied to the
    daemon's life when there is a tether. Returns the transport and the directory.
    """
    # Encoded before anything is made: a lone surrogate fails here, with nothing to undo.
    prompt = plan.system_prompt.encode("utf-8")
    workdir = tempfile.mkdtemp(prefix="claude-proxy-", dir=scratch_root)
    try:
        prompt_file = os.path.join(workdir, "system-prompt.txt")
        fd = os.open(prompt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(prompt)
        scratch = {}
        for name, variable in (("tmp", "CLAUDE_CODE_TMPDIR"), ("config", "CLAUDE_CONFIG_DIR")):
            scratch[variable] = os.path.join(workdir, name)
            os.mkdir(scratch[variable], 0o700)
        # --cli-env may still name its own config dir.
        env = {**scratch, **plan.spawn_env(settings)}
        argv = plan.argv(prompt_file, settings)
        if tether is not None:
            argv = tether.argv(argv)
        transport = reactor.spawnProcess(protocol, argv[0], argv, env=env, path=workdir)
        if tether is not None:
            tether.spawned(transport)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return transport, workdir


@define(eq=False)
class CLISession:
    reactor: ProcessReactor
    plan: RunPlan
    scratch_root: str | None = None
    tether: Tether | None = None
    # The account's quota reports, whoever listens (set by the run that uses it).
    on_quota: Callable[[RateLimit], None] | None = None
    aliases: Aliases | None = None  # taught what the CLI's initialize answer says
    state: str = field(default=STARTING, init=False)
    settings: TurnSettings | None = field(default=None, init=False)  # what its turns run with
    exited: Deferred = field(factory=Deferred, init=False)  # fires once the process is reaped
    _transport: IProcessTransport | None = field(default=None, init=False)
    _workdir: str | None = field(default=None, init=False)
    _listener: SessionListener | None = field(default=None, init=False)
    _batches: list[bytes] = field(factory=list, init=False)  # history batches not yet written
    _held: ControlRequest | None = field(default=None, init=False)  # a can_use_tool not answered
    _calls: list[str] = field(factory=list, init=False)  # the client tool calls of the last message
    _results: dict[str, ToolResult] = field(factory=dict, init=False)  # given, not yet taken
    _stdin_open: bool = field(default=True, init=False)
    _close_after: bool = field(default=False, init=False)
    _ending: IDelayedCall | None = field(default=None, init=False)  # TERM → KILL
    _terminating: bool = field(default=False, init=False)
    _settings_sent: int = field(default=0, init=False)

    # -- life

    def start(self, batches: Sequence[bytes] = (), close_after: bool = False,
              settings: TurnSettings | None = None) -> None:
        """
        Spawn and initialize; with a turn's batches, the first goes right
        behind the initialize request (a warm pool's session starts without).
        """
        # A bare initialize tells a waiting session's readiness; a turn needs none.
        first = self.plan.initialize + batches[0] if batches \
            else self.plan.initialize or BARE_INITIALIZE
        protocol = LineProcessProtocol(self, first)
        self.settings = settings if settings is not None else self.plan.cold_settings
        self._transport, self._workdir = spawn(self.reactor, self.plan, self.settings, protocol,
                                               self.scratch_root, self.tether)
        if batches:
            self._turn(batches[1:], close_after)

    @property
    def alive(self) -> bool:
        return self.state != ENDED and not self._terminating

    @property
    def pid(self) -> int | None:
        return None if self._transport is None else self._transport.pid

    @property
    def pending_calls(self) -> tuple[str, ...]:
        """The client tool calls a session in `tools` waits for results of, in order."""
        return tuple(canonical_id(c) for c in self._calls) if self.state == TOOLS else ()

    def attach(self, listener: SessionListener) -> None:
        self._listener = listener

    def detach(self) -> None:
        self._listener = None
        self.resume()  # a paused client no longer holds the process back

    def send(self, batches: Sequence[bytes], settings: TurnSettings,
             close_after: bool = False) -> None:
        """
        A turn with these settings: the first batch now, each next one when
        the CLI has taken the one before; with `close_after`, stdin closes
        behind the last.
        """
        self.apply(settings)
        self._write(batches[0])
        self._turn(batches[1:], close_after)

    def apply(self, settings: TurnSettings) -> None:
        """
        The settings for what the CLI does next (written ahead of it: the CLI
        takes stdin in order).
        """
        if settings == self.settings:
            return
        self._settings_sent += 1
        self._write(settings_line(f"settings-{self._settings_sent}", self.plan, settings))
        self.settings = settings

    def _turn(self, rest: Sequence[bytes], close_after: bool) -> None:
        self.state = TURN
        self._batches = list(rest)
        self._close_after = close_after
        if not rest and close_after:
            # Nothing more to say and nothing to ask: the CLI starts the turn at once.
            self.close_stdin()

    def give_results(self, results: Sequence[ToolResult]) -> None:
        """The held tool calls' results: the CLI's turn goes on with them (and its settings)."""
        self.state = TURN
        self._results = {r.tool_id: r for r in results}
        held, self._held = self._held, None
        if held is not None:
            self._permission(held)

    def close_stdin(self) -> None:
        if self._transport is not None and self._stdin_open:
            self._stdin_open = False
            self._transport.closeStdin()

    def pause(self) -> None:
        if self._transport is not None:
            self._transport.pauseProducing()

    def resume(self) -> None:
        if self._transport is not None:
            self._transport.resumeProducing()

    def end(self, grace: float) -> None:
        """SIGTERM now, SIGKILL after `grace` if it is still there."""
        if self._transport is None or self._terminating:
            return
        self._terminating = True
        self._signal("TERM")
        self._ending = self.reactor.callLater(grace, self._signal, "KILL")

    def kill(self) -> None:
        """SIGKILL now: it holds no answer anyone waits for."""
        if self._transport is None:
            return
        self._terminating = True
        self._cancel_ending()
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        if self._transport is None:
            return
        try:
            send_signal(self.tether, self._transport, name)
        except ProcessExitedAlready:
            return
        log.info("Sent SIG{signal} to the CLI (pid {pid})", signal=name, pid=self._transport.pid)

    def _cancel_ending(self) -> None:
        if self._ending is not None and self._ending.active():
            self._ending.cancel()
        self._ending = None

    def _write(self, data: bytes) -> None:
        if self._transport is not None and self._stdin_open:
            self._transport.write(data)

    # -- the process protocol's controller

    def output_seen(self) -> None:
        if self._listener is not None:
            self._listener.session_output()

    def line_received(self, line: bytes) -> None:
        event = parse_line(line)
        if event is None:
            return
        if isinstance(event, ControlResponse):
            if event.request_id == INITIALIZE_ID and self.state == STARTING:
                self.state = READY
            if event.aliases and self.aliases is not None:
                self.aliases.learn(event.aliases)
            if event.error is not None:
                # A turn's settings not taken: it runs with the ones before (effort, thinking).
                log.warn("The CLI refused control request {request_id}: {error}",
                         request_id=event.request_id, error=event.error[:300])
            return
        if isinstance(event, ControlRequest):
            self._control(event)
            return
        if isinstance(event, Result) and self._batches and not event.is_error:
            # A replayed history message is in place: the next batch.
            self._write(self._batches.pop(0))
            if not self._batches and self._close_after:
                self.close_stdin()
            return
        if isinstance(event, Result):
            if self._batches:
                log.warn("The CLI refused a replayed history message: {text}",
                         text=event.text[:300])
                self._batches = []
            self.state = IDLE
        elif isinstance(event, MessageStart):
            self._calls = []
        elif isinstance(event, ToolUseStart) and client_tool_name(event.name) is not None:
            self._calls.append(event.tool_id)
        elif isinstance(event, AssistantToolUse) and client_tool_name(event.name) is not None \
                and event.tool_id not in self._calls:
            self._calls.append(event.tool_id)
        elif isinstance(event, RateLimit) and self.on_quota is not None:
            self.on_quota(event)
        self._tell(event)

    def _tell(self, event: Event) -> None:
        if self._listener is not None:
            self._listener.session_event(event)

    def _control(self, event: ControlRequest) -> None:
        if event.subtype == "can_use_tool":
            self._permission(event)
        elif event.subtype == "mcp_message" and self._tool_call(event):
            return
        else:
            self._write(control_answer(self.plan, event))

    def _permission(self, event: ControlRequest) -> None:
        tool_id = str(event.request.get("tool_use_id", ""))
        if canonical_id(tool_id) in self._results:
            # Its result is here: let the CLI run it (the proxy's MCP server answers).
            self._write(control_line({"subtype": "success", "request_id": event.request_id,
                                      "response": {"behavior": "allow",
                                                   "updatedInput": event.request.get("input")}}))
            return
        # Held: the answer ends here, and the client runs the tool.
        log.debug("The model called {tool}; held for the client",
                  tool=event.request.get("tool_name"))
        self._held = event
        self.state = TOOLS
        if tool_id not in self._calls:
            self._calls.append(tool_id)
        self._tell(ToolPermission(tool_id))

    def _tool_call(self, event: ControlRequest) -> bool:
        """A tools/call of a call whose result the client gave: answered with it."""
        message = event.request.get("message")
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return False
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        tool_id = meta.get("claudecode/toolUseId") if isinstance(meta, dict) else None
        result = self._results.pop(canonical_id(str(tool_id)), None) if tool_id else None
        if result is None:
            return False
        self._write(control_line({"subtype": "success", "request_id": event.request_id,
                                  "response": {"mcp_response": {
                                      "jsonrpc": "2.0", "id": message.get("id"),
                                      "result": result.mcp()}}}))
        return True

    def line_too_long(self) -> None:
        if self._listener is not None:
            self._listener.session_broken()  # it fails its request and ends the session
        else:
            self.kill()

    def process_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        self.state = ENDED
        self._transport = None
        self._cancel_ending()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        listener, self._listener = self._listener, None
        try:
            if listener is not None:
                listener.session_ended(exit_code, signal, stderr)
        finally:
            self.exited.callback((exit_code, signal, stderr))

