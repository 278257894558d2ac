"""
Finding the Claude Code CLI and asking it for its version: once, blocking, at
start-up (so a missing CLI refuses to start), and asynchronously for /health.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping

from attrs import define, field, frozen
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from claude_proxy.process import ProcessReactor

INSTALL_HINT = (
    "Install it with `npm install -g @anthropic-ai/claude-code`, run `claude` once to log "
    "in with your Claude subscription, or point to it with --claude PATH."
)
# --version answers in well under a second; a hung CLI must not hang start-up or /health.
VERSION_TIMEOUT = 30.0
HEALTH_CACHE_SECONDS = 10.0


class CLIMissing(Exception):
    pass


@frozen
class Health:
    """
    ok: the CLI runs and is logged in, so requests can be answered. A CLI that
    runs but says it is not logged in is not ok: every request would get a 503.
    """

    ok: bool
    path: str
    version: str | None
    error: str | None = None
    # From `claude auth status` (no API call, no quota): logged_in, method, subscription.
    login: dict | None = None

    @property
    def status(self) -> str:
        """"ok", "not_logged_in" (the CLI runs; log in) or "unavailable" (the CLI does not run)."""
        if self.ok:
            return "ok"
        return "not_logged_in" if self.version is not None else "unavailable"


def parse_login(output: bytes) -> dict | None:
    try:
        status = json.loads(output)
    except ValueError:
        return None
    if not isinstance(status, dict) or not isinstance(status.get("loggedIn"), bool):
        return None
    login = {"logged_in": status["loggedIn"], "method": status.get("authMethod"),
             "subscription": status.get("subscriptionType")}
    if login["method"] == "api_key":
        login["warning"] = ("The CLI signs in with an API key: requests are billed per token, "
                            "not to a Claude subscription.")
    return login


def find_claude(option: str | None, environ: Mapping[str, str]) -> str:
    """
    The absolute path of the CLI: --claude as given, else `claude` on PATH.
    """
    wanted = option or "claude"
    found = shutil.which(wanted, path=environ.get("PATH", os.defpath))
    if found is None:
        where = f"'{wanted}'" if option else "'claude' on PATH"
        raise CLIMissing(f"The Claude Code CLI was not found ({where}). {INSTALL_HINT}")
    return os.path.abspath(found)


def parse_version(output: bytes) -> str:
    # "2.1.330 (Claude Code)"
    words = output.decode("utf-8", "replace").split()
    return words[0] if words else ""


def version_now(path: str, env: Mapping[str, str]) -> str:
    """
    Run `claude --version` and wait: for start-up, before the reactor runs.
    """
    try:
        done = subprocess.run([path, "--version"], env=dict(env), capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CLIMissing(f"The Claude Code CLI at {path} cannot run: {e}. {INSTALL_HINT}")
    version = parse_version(done.stdout)
    if done.returncode != 0 or not version:
        why = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[:300]
        raise CLIMissing(f"The Claude Code CLI at {path} failed to report its version "
                         f"(exit {done.returncode}): {why}. {INSTALL_HINT}")
    return version


@define
class CLIProbe:
    """
    The CLI's health for /health, cached briefly so polling costs little.
    """

    reactor: ProcessReactor
    path: str
    env: Mapping[str, str]
    _last: Health | None = field(default=None)
    _checked_at: float = field(default=float("-inf"))
    _pending: defer.Deferred | None = field(default=None)
    _waiters: list = field(factory=list)

    def check(self) -> defer.Deferred:
        """
        The cached health, or the answer of the one probe running: however many
        callers ask at once (/health needs no key), at most one probe runs.
        """
        now = self.reactor.seconds()
        if self._last is not None and now - self._checked_at < HEALTH_CACHE_SECONDS:
            return defer.succeed(self._last)
        # The waiter first: a probe that fails before its first wait answers at once.
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        if self._pending is None:
            self._pending = defer.ensureDeferred(self._probe(now))
            self._pending.addBoth(self._probed)
        return waiter

    def _probed(self, health: Health) -> None:
        self._pending = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(health)

    async def _probe(self, now: float) -> Health:
        try:
            out, err, code = await self._run("--version")
        except defer.TimeoutError:
            health = Health(False, self.path, None,
                            f"no answer to --version within {VERSION_TIMEOUT:.0f} s")
        except OSError as e:
            health = Health(False, self.path, None, str(e))
        else:
            version = parse_version(out)
            if code == 0 and version:
                login = await self._login()
                # An unknown login (an older CLI without `auth status`) is not held against it.
                logged_out = login is not None and not login["logged_in"]
                health = Health(not logged_out, self.path, version,
                                "The CLI is not logged in: run `claude`, then /login."
                                if logged_out else None, login)
            else:
                why = (err or out).decode("utf-8", "replace").strip()[:300]
                health = Health(False, self.path, None, f"exit {code}: {why}")
        self._last, self._checked_at = health, now
        return health

    def _run(self, *args: str) -> defer.Deferred:
        collect = _Collect()
        self.reactor.spawnProcess(collect, self.path, (self.path, *args), env=dict(self.env))
        return collect.done.addTimeout(VERSION_TIMEOUT, self.reactor)

    async def _login(self) -> dict | None:
        try:
            out, _, _ = await self._run("auth", "status", "--json")
        except (OSError, defer.TimeoutError):
            return None
        return parse_login(out)


class _Collect(ProcessProtocol):
    """A probe's output and exit code; cancelling it (the timeout) kills the process."""

    def __init__(self) -> None:
        self.done: defer.Deferred = defer.Deferred(self._cancel)
        self._out: list[bytes] = []
        self._err: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        if not self.done.called:
            code = reason.value.exitCode if reason.check(ProcessTerminated) else 0
            self.done.callback((b"".join(self._out), b"".join(self._err), code))

    def _cancel(self, _: defer.Deferred) -> None:
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
