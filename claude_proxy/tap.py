"""
`twistd claudeproxy`: command-line options, and the service they describe.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application import service, strports
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from claude_proxy import __version__
from claude_proxy.accounts import Account, Accounts
from claude_proxy.admission import LOOPBACK_NAMES, Admission
from claude_proxy.app import ProxyAPI
from claude_proxy.auth import KeyFileError, KeyRing
from claude_proxy.cli_lifetime import Tether, default_state_dir, record_name
from claude_proxy.cli_probe import CLIMissing, CLIProbe, find_claude, version_now
from claude_proxy.dispatch import Dispatch
from claude_proxy.history import History
from claude_proxy.live_sessions import LiveSessions
from claude_proxy.metrics import Metrics
from claude_proxy.observer import RequestObserver
from claude_proxy.openai_responses.store_file import StoredResponses
from claude_proxy.plan import CLISettings, child_env
from claude_proxy.pool import WarmPool
from claude_proxy.process import ProcessReactor
from claude_proxy.runner import Runner
from claude_proxy.site import ProxySite
from claude_proxy.state import StateFile, state_name

log = Logger()

DEFAULT_LISTEN = "tcp:3456:interface=127.0.0.1"
DEFAULT_MAX_BODY = 32 * 1024 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
OVERAGE = ("refuse", "allow")


class DaemonReactor(ProcessReactor, Protocol):
    """
    What the daemon asks of its reactor: processes and time (IReactorProcess,
    IReactorTime), its own start and stop (IReactorCore), calls from signal
    handlers and the state file's thread (IReactorThreads), and, through
    strports, its ports (IReactorTCP, IReactorUNIX).
    """

    running: bool

    def addSystemEventTrigger(self, phase: str, eventType: str, callable: Callable[..., Any],
                              *args: Any, **kw: Any) -> Any: ...

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kw: Any) -> None: ...

    def stop(self) -> None: ...


def _non_negative_float(value: str) -> float:
    parsed = float(value)
    if parsed < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return parsed


def interface_of(description: str) -> str | None:
    """The interface= of a --listen endpoint description, if it names one."""
    rest = description.partition(":")[2]
    parts = re.split(r"(?<!\\):", rest)  # "\:" is a colon inside a value (IPv6)
    interface = next((p.partition("=")[2] for p in parts if p.startswith("interface=")), None)
    return interface.replace("\\", "").lower() if interface else None


def beyond_loopback(description: str) -> bool:
    """Whether a --listen endpoint can be reached from other machines."""
    if description.startswith("unix:"):
        return False
    interface = interface_of(description)
    if not interface:
        return True  # all interfaces
    try:
        return not ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface != "localhost"


def _positive(kind: type) -> Any:
    def check(value: str) -> Any:
        parsed = kind(value)
        if parsed <= 0:
            raise ValueError(f"must be positive, not {value}")
        return parsed

    check.coerceDoc = "Must be positive."
    return check


def _non_negative_int(value: str) -> int:
    parsed = int(value)
    if parsed < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return parsed


class Options(usage.Options):
    synopsis = "[claudeproxy options]"
    longdesc = (
        "Serve the OpenAI Chat Completions API (POST /v1/chat/completions), the OpenAI "
        "Responses API (POST /v1/responses; GET and DELETE /v1/responses/ID) and the Anthropic "
        "Messages API (POST /v1/messages, POST /v1/messages/count_tokens), answered by the "
        "logged-in Claude Code CLI; with GET /v1/models and /v1/models/ID (the models), "
        "/v1/usage (each account's quota), /health (the CLI and its login; no key needed) and "
        "/metrics (Prometheus); and a status page for a browser at / (its files "
        "/status/page.css and /status/page.js, its data /status/data). HEAD / and HEAD "
        "/api/hello answer 200 (Claude Code's preflight and preconnect)."
    )

    optFlags = [
        ["image-urls", None, "Pass http(s) image URLs on to the API, which fetches them "
                             "(the proxy never does); without it they get a 400."],
        ["insecure-no-auth", None, "Allow listening beyond loopback without an API key."],
    ]

    optParameters = [
        ["claude", None, None, "The Claude Code CLI to run [default: claude found on PATH]."],
        ["max-concurrent", None, 4, "CLI processes running at once.", _positive(int)],
        ["queue", None, 32, "Requests that may wait for a free process; beyond, 429.",
         _non_negative_int],
        ["timeout", None, 600.0, "Seconds a request may take in all.", _positive(float)],
        ["idle-timeout", None, 180.0, "Seconds the CLI may stay silent before it is stopped.",
         _positive(float)],
        ["cli-retries", None, 2, "How often the CLI itself retries a failed API call.",
         _non_negative_int],
        ["api-key-file", None, None,
         "File of accepted API keys, one a line; re-read on SIGHUP."],
        ["max-body-bytes", None, DEFAULT_MAX_BODY, "Largest request body; beyond, 413.",
         _positive(int)],
        ["max-per-key", None, 0, "Chat requests one API key may run at once; 0: no limit.",
         _non_negative_int],
        ["warm", None, 1, "CLI processes kept started ahead of time for recent request shapes "
                          "(counted inside --max-concurrent); 0: none.", _non_negative_int],
        ["warm-ttl", None, 600.0, "Seconds a pre-started process may wait before it is replaced.",
         _positive(float)],
        ["sessions", None, 3,
         "Live CLI sessions kept between a conversation's turns, so its next request (a "
         "follow-up or tool results) continues the same CLI instead of starting one and "
         "replaying the history (counted inside --max-concurrent; ~200 MiB each); 0: none.",
         _non_negative_int],
        ["session-ttl", None, 600.0, "Seconds a live session may wait for its next request.",
         _positive(float)],
        ["read-timeout", None, 60.0,
         "Seconds a request (its head and body) may take to arrive; then 408.",
         _positive(float)],
        ["state-dir", None, None,
         "Where the daemon keeps its record of running CLI processes and its state file "
         "(stored responses, recent requests) "
         "[default: $XDG_STATE_HOME/claude-proxy or ~/.local/state/claude-proxy]."],
        ["overage", None, "refuse",
         "refuse: stop sending an account requests while its answers draw on paid extra usage, "
         "until its window resets (429 meanwhile); allow: go on."],
        ["shutdown-grace", None, 30.0,
         "Seconds running requests get to finish on SIGTERM before they are ended.",
         _non_negative_float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["cli-env"] = []
        self["api-key"] = []
        self["cors-origin"] = []
        self["account"] = []

    def opt_account(self, pair: str) -> None:
        """
        NAME=DIR: a Claude account to serve from, DIR being a config dir where it is
        logged in (`CLAUDE_CONFIG_DIR=DIR claude`, then /login); repeatable
        [default: your usual login].
        """
        name, sep, directory = pair.partition("=")
        if not sep or not _ACCOUNT_NAME.fullmatch(name) or not directory:
            raise usage.UsageError(f"--account takes NAME=DIR, not {pair!r}")
        if name in {n for n, _ in self["account"]}:
            raise usage.UsageError(f"--account {name} is given twice")
        directory = os.path.abspath(os.path.expanduser(directory))
        if not os.path.isdir(directory):
            raise usage.UsageError(f"--account {name}: {directory} is not a directory")
        self["account"].append((name, directory))

    def opt_api_key(self, key: str) -> None:
        """
        An accepted API key (repeatable; it shows in `ps`: prefer --api-key-file).
        """
        if not key.strip():
            raise usage.UsageError("--api-key must not be empty")
        self["api-key"].append(key.strip())

    def opt_cors_origin(self, origin: str) -> None:
        """
        A web origin allowed to call the API, e.g. http://localhost:5173 (repeatable).
        Requests from any other Origin are refused with 403.
        """
        self["cors-origin"].append(origin.rstrip("/"))

    def opt_listen(self, description: str) -> None:
        """
        Endpoint description to listen on (repeatable)
        [default: tcp:3456:interface=127.0.0.1].
        """
        self["listen"].append(description)

    def opt_cli_env(self, pair: str) -> None:
        """
        NAME=VALUE set for the CLI only (repeatable), e.g. ANTHROPIC_BASE_URL for a gateway.
        """
        name, sep, value = pair.partition("=")
        if not sep or not _ENV_NAME.fullmatch(name):
            raise usage.UsageError(f"--cli-env takes NAME=VALUE, not {pair!r}")
        self["cli-env"].append((name, value))

    def opt_version(self) -> None:
        """
        Print the version and exit.
        """
        print(f"claude-proxy {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self["overage"] not in OVERAGE:
            raise usage.UsageError(f"--overage takes {' or '.join(OVERAGE)}, not {self['overage']!r}")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        open_to = [d for d in self["listen"] if beyond_loopback(d)]
        if open_to and not (self["api-key"] or self["api-key-file"] or self["insecure-no-auth"]):
            raise usage.UsageError(
                f"refusing to listen on {', '.join(open_to)} without an API key: anyone who can "
                "reach it could use your subscription. Give keys with --api-key-file FILE (or "
                "--api-key), or, if the network is trusted, say so with --insecure-no-auth.")


class ProxyService(service.MultiService):
    """
    The runner and the listening ports. A port that cannot be bound stops
    start-up with a plain message rather than a traceback. Under twistd it
    also owns two signals: SIGHUP re-reads the API keys, and SIGTERM stops
    gracefully and exits 0 (twistd's own handler would re-raise the signal).
    The state file is opened once the ports are bound (a second daemon on the
    same ports stops before it touches the file) and closed after everything
    else has stopped (what the grace period finished is written).
    """

    def __init__(self, reactor: DaemonReactor, keys: KeyRing, state: StateFile | None = None,
                 restore: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._reactor = reactor
        self._keys = keys
        self._state = state
        self._restore = restore
        self._previous: dict[int, Any] = {}
        self._stopping = False

    def privilegedStartService(self) -> None:
        # twistd binds ports here, before dropping privileges.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"claude-proxy: cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}. "
                "Is another claude-proxy already running? Use --listen to pick another port."
            ) from None

    def startService(self) -> None:
        if self._state is not None and not self._state.is_open:
            self._state.open()
            if self._restore is not None:
                self._restore()
        super().startService()
        # Only as the process's own service: not when embedded in a running reactor (tests).
        if threading.current_thread() is threading.main_thread() and not self._reactor.running:
            self._reactor.addSystemEventTrigger("after", "startup", self._install_signals)

    def stopService(self) -> Deferred[None]:
        stopped = super().stopService()
        if self._state is not None:
            stopped.addCallback(lambda _: self._state.close())
        return stopped

    def _install_signals(self) -> None:
        def on_term(number: int, frame: Any) -> None:
            self._reactor.callFromThread(self._terminate)

        def on_hup(number: int, frame: Any) -> None:
            self._reactor.callFromThread(self._keys.reload)

        for number, handler in ((signal.SIGTERM, on_term), (signal.SIGHUP, on_hup)):
            self._previous[number] = signal.signal(number, handler)
        # Kept through the graceful stop (a second SIGTERM, a SIGHUP must not kill it then).
        self._reactor.addSystemEventTrigger("after", "shutdown", self._restore_signals)

    def _restore_signals(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _terminate(self) -> None:
        if self._stopping:
            return  # already stopping: the grace period runs its course
        self._stopping = True
        log.info("Received SIGTERM, stopping gracefully.")
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # stopping already (SIGINT)


def makeService(options: Options, reactor: DaemonReactor | None = None,
                environ: Mapping[str, str] | None = None) -> service.MultiService:
    if reactor is None:
        from twisted.internet import reactor
    if environ is None:
        environ = os.environ
    cli_env = tuple(options["cli-env"])
    try:
        # --cli-env PATH=... also says where to look for `claude`.
        claude = find_claude(options["claude"], {**environ, **dict(cli_env)})
        settings = CLISettings(claude, options["cli-retries"], cli_env)
        probe_env = child_env(settings, environ)
        version = version_now(claude, probe_env)
    except CLIMissing as e:
        raise SystemExit(f"claude-proxy: {e}") from None
    log.info("Using the Claude Code CLI {version} at {path}", version=version, path=claude)

    try:
        keys = KeyRing(tuple(options["api-key"]), options["api-key-file"])
    except KeyFileError as e:
        raise SystemExit(f"claude-proxy: {e}") from None

    state_dir = options["state-dir"] or default_state_dir(environ)
    state = StateFile(os.path.join(state_dir, state_name(options["listen"])), reactor)
    history = History(state)
    runner = Runner(reactor, options["max-concurrent"], options["queue"],
                    options["timeout"], options["idle-timeout"],
                    shutdown_grace=options["shutdown-grace"])
    runner.tether = Tether(os.path.join(state_dir, record_name(options["listen"])))
    if options["warm"]:
        runner.pool = WarmPool(reactor, min(options["warm"], options["max-concurrent"]),
                               options["warm-ttl"], tether=runner.tether,
                               aliases=runner.aliases)
    if options["sessions"]:
        runner.sessions = LiveSessions(reactor, options["sessions"], options["session-ttl"])
    accounts = Accounts(tuple(Account(name, d) for name, d in options["account"])
                        or (Account("default"),), refuse_overage=options["overage"] == "refuse")
    logins = {a.name: CLIProbe(reactor, claude, child_env(settings, a.environ(environ)))
              for a in accounts.accounts}
    metrics = Metrics(runner, accounts)
    dispatch = Dispatch(runner, settings, environ, reactor, accounts,
                        max_per_key=options["max-per-key"])
    api = ProxyAPI(dispatch, logins[accounts.accounts[0].name], metrics,
                   image_urls=bool(options["image-urls"]),
                   logins=logins if options["account"] else {}, history=history)

    def restore() -> None:
        StoredResponses(state).load(api.responses.store)
        history.load(reactor.seconds())

    top = ProxyService(reactor, keys, state, restore)
    runner.setName("runner")
    runner.setServiceParent(top)
    hosts = None
    if not keys.enabled and not options["insecure-no-auth"]:
        hosts = LOOPBACK_NAMES | {i for i in map(interface_of, options["listen"]) if i}
    admission = Admission(api.resource(), keys, api.doors, frozenset(options["cors-origin"]),
                          hosts)
    observer = RequestObserver(metrics, reactor, api.labels, history)
    site = ProxySite(admission, observer, api.doors, options["max-body-bytes"],
                     options["read-timeout"], reactor=reactor)
    for description in options["listen"]:
        strports.service(description, site, reactor=reactor).setServiceParent(top)
    return top
