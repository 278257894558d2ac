"""
`twistd claudeproxy`: command-line options, and the service they describe.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from twisted.application import service, strports
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from claude_proxy import __version__
from claude_proxy.app import ProxyAPI
from claude_proxy.cli import CLIMissing, CLIProbe, find_claude, version_now
from claude_proxy.plan import CLISettings, child_env
from claude_proxy.runner import Runner

log = Logger()

DEFAULT_LISTEN = "tcp:3456:interface=127.0.0.1"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
        "Serve an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health) "
        "that answers through the logged-in Claude Code CLI."
    )

    optFlags = [
        ["image-urls", None, "Pass http(s) image URLs on to the API, which fetches them "
                             "(the proxy never does); without it they get a 400."],
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
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["cli-env"] = []

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
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]


class ProxyService(service.MultiService):
    """
    The runner and the listening ports. A port that cannot be bound stops
    start-up with a plain message rather than a traceback.
    """

    def privilegedStartService(self) -> None:
        # twistd binds ports here, before dropping privileges.
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"claude-proxy: cannot listen on {e.interface or '*'}:{e.port}: {e.socketError}. "
                "Is another claude-proxy already running? Use --listen to pick another port."
            ) from None


def makeService(options: Options, reactor: Any = None,
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
        probe_env = child_env(settings, environ, None)
        version = version_now(claude, probe_env)
    except CLIMissing as e:
        raise SystemExit(f"claude-proxy: {e}") from None
    log.info("Using the Claude Code CLI {version} at {path}", version=version, path=claude)

    top = ProxyService()
    runner = Runner(reactor, options["max-concurrent"], options["queue"],
                    options["timeout"], options["idle-timeout"])
    runner.setName("runner")
    runner.setServiceParent(top)
    probe = CLIProbe(reactor, claude, probe_env)
    api = ProxyAPI(runner, settings, probe, environ, reactor,
                   image_urls=bool(options["image-urls"]))
    site = Site(api.resource())
    site.displayTracebacks = False
    for description in options["listen"]:
        strports.service(description, site, reactor=reactor).setServiceParent(top)
    return top
