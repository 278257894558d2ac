"""
Running the CLI: admission (a concurrency limit and a bounded queue), spawning,
the idle and total timers, and TERM then KILL. Every timer is cancelled on
every way out.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import deque
from typing import Any, Protocol

from attrs import Factory, define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.logger import Logger

from claude_proxy.errors import (
    APIError, classify_cli_error, classify_exit, cli_unavailable, queue_full, timeout_error,
)
from claude_proxy.events import (
    ApiRetry, ControlRequest, Event, MessageStart, RateLimit, Result, ToolPermission, parse_line,
)
from claude_proxy.plan import RunPlan
from claude_proxy.process import LineProcessProtocol
from claude_proxy.tether import Tether, send_signal
from claude_proxy.tools import mcp_answer

log = Logger()

SHUTTING_DOWN = APIError(503, "The proxy is shutting down.", "server_error", "shutting_down")
# A bug of the proxy's own, met inside one run: that run fails, the daemon goes on.
INTERNAL_ERROR = APIError(500, "Internal error in the proxy while running the CLI; see its log.",
                          "server_error", "internal_error")
NOT_UNICODE = APIError(400, "The system prompt is not valid Unicode (it holds a lone surrogate).",
                       "invalid_request_error", "invalid_text", "messages")
OUTPUT_TOO_LONG = APIError(502, "The Claude Code CLI wrote a runaway output line.",
                           "server_error", "cli_error")


def control_answer(plan: RunPlan, event: ControlRequest) -> bytes:
    """The answer to a control request of the CLI's other than can_use_tool."""
    if event.subtype == "mcp_message" and isinstance(event.request.get("message"), dict):
        body = {"subtype": "success", "request_id": event.request_id,
                "response": {"mcp_response": mcp_answer(plan.tools, event.request["message"])}}
    else:
        body = {"subtype": "error", "request_id": event.request_id,
                "error": f"The proxy does not handle {event.subtype!r}."}
    return json.dumps({"type": "control_response", "response": body},
                      separators=(",", ":")).encode() + b"\n"


def spawn(reactor: Any, plan: RunPlan, controller: Any, scratch_root: str | None,
          first: bytes, tether: Tether | None = None,
          ) -> tuple[IProcessTransport, LineProcessProtocol, str]:
    """
    Start the CLI for a plan in a private scratch directory (its system prompt
    file, CLAUDE_CODE_TMPDIR and CLAUDE_CONFIG_DIR inside), writing `first` to
    its stdin, tied to the daemon's life when there is a tether. Returns the
    transport, the protocol and the directory.
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
        env = {**scratch, **plan.env}
        argv = plan.argv(prompt_file)
        if tether is not None:
            argv = tether.argv(argv)
        protocol = LineProcessProtocol(controller, first)
        transport = reactor.spawnProcess(protocol, argv[0], argv, env=env, path=workdir)
        if tether is not None:
            tether.spawned(transport)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return transport, protocol, workdir


def run_error(failure: BaseException, path: str) -> APIError:
    """The error a run fails with when starting it raised."""
    if isinstance(failure, APIError):
        return failure
    if isinstance(failure, UnicodeError):
        return NOT_UNICODE
    if isinstance(failure, OSError):
        return cli_unavailable(path, str(failure))
    return INTERNAL_ERROR


class RunConsumer(Protocol):
    """What a run reports to: events as they come, then exactly one ending."""

    def cli_event(self, event: Event) -> None: ...

    def cli_finished(self, result: Result) -> None: ...

    def cli_failed(self, error: APIError) -> None: ...


@define(eq=False)
class CLIRun:
    """
    One request's CLI process, from queued to reaped. It is also the push
    producer of a streaming response: a slow client stops us reading the CLI.
    """

    runner: Runner
    plan: RunPlan
    consumer: RunConsumer | None
    exited: Deferred = Factory(Deferred)
    transport: IProcessTransport | None = None
    _workdir: str | None = None
    _total: IDelayedCall | None = None
    _idle: IDelayedCall | None = None
    _kill: IDelayedCall | None = None
    _paused: bool = False
    _resets_at: int | None = None
    _retry_after: int | None = None
    _batches_sent: int = 0
    _terminating: bool = False
    _done: bool = False

    def _later(self, seconds: float, f: Any, *args: Any) -> IDelayedCall:
        return self.runner.reactor.callLater(seconds, f, *args)

    def queued(self) -> None:
        self._total = self._later(self.runner.timeout, self._timed_out, "total")

    def start(self) -> None:
        """
        Take a pre-started process or spawn one. Whatever fails on the way
        fails this run alone: its slot and scratch directory are given back.
        """
        try:
            self._start()
        except Exception as e:
            if not isinstance(e, (OSError, UnicodeError, APIError)):
                log.failure("Starting a CLI run failed")
            self._report_error(run_error(e, self.plan.base_args[0]))
            if self.transport is not None:
                self.terminate()  # its exit cleans up
            else:
                self._cleanup()

    def _start(self) -> None:
        warm = self.runner.pool.take(self.plan) if self.runner.pool is not None else None
        if warm is not None:
            # A pre-started process: spawned and initialized, waiting for its turn.
            self.transport, self._workdir = warm.transport, warm.workdir
            warm.protocol.hand_over(self)
            self._write(self.plan.stdin[0])
        else:
            self.transport, _, self._workdir = spawn(
                self.runner.reactor, self.plan, self, self.runner.scratch_root,
                self.plan.initialize + self.plan.stdin[0], self.runner.tether)
        self._sent_batch()
        if self._paused:
            self.transport.pauseProducing()
        else:
            self._arm_idle()

    # -- what the process protocol tells us

    def output_seen(self) -> None:
        self._arm_idle()

    def line_received(self, line: bytes) -> None:
        try:
            self._line(line)
        except Exception:
            self._crashed("handling a line of the CLI's output")

    def _line(self, line: bytes) -> None:
        if self._done:
            return
        event = parse_line(line)
        if event is None:
            return
        if isinstance(event, ControlRequest):
            self._control(event)
            return
        if isinstance(event, Result) and self._batches_sent < len(self.plan.stdin):
            if not event.is_error:
                # A replayed history message is in place: send the next batch.
                self._write(self.plan.stdin[self._batches_sent])
                self._sent_batch()
                return
            log.warn("The CLI refused replayed history message {n}: {text}",
                     n=self._batches_sent, text=event.text[:300])
        if isinstance(event, Result):
            if self.transport is not None:
                self.transport.closeStdin()  # the CLI exits once it has nothing to read
            if event.is_error:
                self._report_error(classify_cli_error(
                    event.text, event.api_error_status, self.runner.reactor.seconds(),
                    self._resets_at, self._retry_after))
            else:
                self._end(lambda c: c.cli_finished(event))
            # The answer is complete; the process should exit on its own now.
            self._cancel_timers()
            self._kill = self._later(self.runner.kill_grace, self.terminate)
            return
        if isinstance(event, MessageStart) and self.plan.model.startswith("claude-") \
                and event.model and event.model != self.plan.model:
            # The CLI maps some full ids to newer models without saying so.
            log.warn("The CLI ran {actual} for the requested {requested}",
                     actual=event.model, requested=self.plan.model)
        if isinstance(event, RateLimit) and event.status == "rejected":
            self._resets_at = event.resets_at
        if isinstance(event, ApiRetry):
            log.info("CLI retrying the API call (attempt {attempt}, status {status})",
                     attempt=event.attempt, status=event.error_status)
            # The CLI waits as long as the API's retry-after says (plus jitter): the
            # delay of its last retry of a 429 is the best wait a client can be told.
            delay = event.retry_delay_ms
            if event.error_status == 429 and delay is not None and delay > 0:
                self._retry_after = -(-delay // 1000)
        self._report(lambda c: c.cli_event(event))

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _sent_batch(self) -> None:
        self._batches_sent += 1
        if self._batches_sent == len(self.plan.stdin) and not self.plan.tools \
                and self.transport is not None:
            # Nothing more to say and no tools to serve: with stdin still open the
            # CLI waits for more input before it starts the turn (~20 ms measured).
            self.transport.closeStdin()

    def _control(self, event: ControlRequest) -> None:
        if event.subtype == "can_use_tool":
            # Never answered: the CLI waits, the answer ends at the model's
            # message_stop (or here, when there was no stream to see it in)
            # and the run is ended before any tool could run.
            log.debug("The model called {tool}; held for the client",
                      tool=event.request.get("tool_name"))
            permission = ToolPermission(str(event.request.get("tool_use_id", "")))
            self._report(lambda c: c.cli_event(permission))
            return
        self._write(control_answer(self.plan, event))

    def line_too_long(self) -> None:
        self._report_error(OUTPUT_TOO_LONG)
        self.terminate()

    def process_ended(self, exit_code: int | None, signal: int | None, stderr: str) -> None:
        self.transport = None
        try:
            if not self._done:
                self._report_error(classify_exit(exit_code, signal, stderr,
                                                 self.runner.reactor.seconds()))
        except Exception:
            self._crashed("classifying the CLI's exit")
        finally:
            self._cleanup()

    def _crashed(self, doing: str) -> None:
        """A bug of the proxy's met in this run: fail it alone and end its process."""
        log.failure("Internal error while {doing}", doing=doing)
        self._report_error(INTERNAL_ERROR)
        self.terminate()

    # -- ending

    def cancel(self) -> None:
        """
        The client went away: end the process (or leave the queue) quietly.
        """
        self._done = True
        if self.transport is None and self._workdir is None:
            self.runner._dequeue(self)
            self._cleanup()
        else:
            self.terminate()

    def fail(self, error: APIError) -> None:
        self._report_error(error)
        self.cancel()

    def terminate(self) -> None:
        """
        SIGTERM now, SIGKILL after the grace period if it is still there.
        """
        self._cancel_timers()
        if self.transport is None or self._terminating:
            return
        self._terminating = True
        self._signal("TERM")
        self._kill = self._later(self.runner.kill_grace, self._signal, "KILL")

    def _signal(self, name: str) -> None:
        if self.transport is None:
            return
        try:
            send_signal(self.runner.tether, self.transport, name)
        except ProcessExitedAlready:
            return
        log.info("Sent SIG{signal} to the CLI (pid {pid})", signal=name, pid=self.transport.pid)

    def _timed_out(self, kind: str) -> None:
        seconds = self.runner.timeout if kind == "total" else self.runner.idle_timeout
        if kind == "total":
            self._total = None
        else:
            self._idle = None
        self.fail(timeout_error(kind, seconds))

    def _arm_idle(self) -> None:
        if self._done or self._terminating:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.runner.idle_timeout)
        else:
            self._idle = self._later(self.runner.idle_timeout, self._timed_out, "idle")

    def _cancel_timers(self) -> None:
        for call in (self._total, self._idle, self._kill):
            if call is not None and call.active():
                call.cancel()
        self._total = self._idle = self._kill = None

    def _report(self, deliver: Any) -> None:
        if self._done or self.consumer is None:
            return
        try:
            deliver(self.consumer)
        except Exception:
            self._crashed("handing a CLI event to the response")

    def _end(self, deliver: Any) -> None:
        """Deliver the one ending; nothing reaches the consumer after it."""
        if self._done:
            return
        self._done = True
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        try:
            deliver(consumer)
        except Exception:
            # The response could not take its ending: there is no one left to tell.
            log.failure("Internal error while ending a response")
            self.terminate()

    def _report_error(self, error: APIError) -> None:
        self._end(lambda c: c.cli_failed(error))

    def _cleanup(self) -> None:
        self._cancel_timers()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        try:
            self.runner._release(self)
        finally:
            if not self.exited.called:
                self.exited.callback(None)

    # -- IPushProducer, for the streaming response

    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pauseProducing()
        # A client that reads slowly is not a silent CLI.
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
            self._idle = None

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resumeProducing()
            self._arm_idle()

    def stopProducing(self) -> None:
        self.cancel()


@define(eq=False, slots=False)
class Runner(Service):
    """
    Admits runs up to max_concurrent at once, queues up to queue_size more,
    and ends every process it started when the service stops.
    """

    reactor: Any  # IReactorProcess and IReactorTime
    max_concurrent: int = 4
    queue_size: int = 32
    timeout: float = 600.0
    idle_timeout: float = 180.0
    kill_grace: float = 5.0
    scratch_root: str | None = None
    shutdown_grace: float = 0.0
    pool: Any = None  # a WarmPool of pre-started processes, or None
    tether: Tether | None = None  # ties each CLI's life to the daemon's
    _active: set = field(factory=set)
    _queue: deque = field(factory=deque)
    _stopping: bool = False

    def startService(self) -> None:
        super().startService()
        if self.tether is not None:
            self.tether.sweep()

    def submit(self, plan: RunPlan, consumer: RunConsumer) -> CLIRun:
        """
        Start a run now, or queue it; a full queue raises a 429 at once.
        """
        if self._stopping:
            raise SHUTTING_DOWN
        if len(self._active) >= self.max_concurrent and len(self._queue) >= self.queue_size:
            raise queue_full(retry_after=5)
        run = CLIRun(self, plan, consumer)
        run.queued()
        if len(self._active) < self.max_concurrent:
            self._launch(run)
        else:
            self._queue.append(run)
        self._warm(lambda pool: pool.note(plan, self._room()))
        return run

    def _warm(self, step: Any) -> None:
        """A step of the warm pool's; a failure there costs a pre-started process, no request."""
        if self.pool is None:
            return
        try:
            step(self.pool)
        except Exception:
            log.failure("Internal error in the warm pool")

    def _launch(self, run: CLIRun) -> None:
        # Pre-started processes count inside the limit: one of another shape gives way.
        def make_room(pool: Any) -> None:
            if not pool.has(run.plan):
                while len(self._active) + pool.count >= self.max_concurrent and pool.evict_one():
                    pass

        self._warm(make_room)
        self._active.add(run)
        run.start()  # it fails alone, never raises

    def _room(self) -> int:
        waiting = self.pool.count if self.pool is not None else 0
        return max(0, self.max_concurrent - len(self._active) - len(self._queue) - waiting)

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _dequeue(self, run: CLIRun) -> None:
        if run in self._queue:
            self._queue.remove(run)

    def _release(self, run: CLIRun) -> None:
        self._active.discard(run)
        while self._queue and len(self._active) < self.max_concurrent:
            self._launch(self._queue.popleft())
        if not self._stopping:
            self._warm(lambda pool: pool.refill(self._room()))

    def stopService(self) -> Deferred:
        """
        Queued requests fail at once; running ones get shutdown_grace seconds
        to finish, then fail too (a stream gets an error event and [DONE]),
        and every CLI process is ended.
        """
        self._stopping = True
        super().stopService()
        for run in list(self._queue):
            run.fail(SHUTTING_DOWN)
        running = list(self._active)
        warm = self.pool.stop() if self.pool is not None else []
        done = DeferredList([run.exited for run in running] + warm)
        if running and self.shutdown_grace <= 0:
            self._end_all()
        elif running:
            log.info("Waiting up to {grace}s for {count} request(s) to finish",
                     grace=self.shutdown_grace, count=len(running))
            deadline = self.reactor.callLater(self.shutdown_grace, self._end_all)
            done.addBoth(lambda result: deadline.cancel() if deadline.active() else None)
        return done

    def _end_all(self) -> None:
        for run in list(self._active):
            run.fail(SHUTTING_DOWN)
