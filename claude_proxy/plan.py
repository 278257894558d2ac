"""
A run plan: everything one CLI run needs (argv, environment, stdin, system
prompt), built from a validated request. Pure: no files, no processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cached_property

from attrs import frozen

from claude_proxy.conversation import Message
from claude_proxy.models import ALIASES
from claude_proxy.request import NeutralRequest
from claude_proxy.tools import Tool, initialize_request

# Variables taken from the daemon's own environment. Anything else, notably
# ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN (they move billing off the
# subscription) and ANTHROPIC_BASE_URL (it sends the OAuth token where it
# points), reaches the CLI only through --cli-env.
INHERITED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TZ", "LANG", "LANGUAGE", "TMPDIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "CLAUDE_CODE_OAUTH_TOKEN",
})

# Set for every run: a daemon's CLI must not update itself, phone home, write
# auto-memory, retry for minutes while a client waits, or change the
# conversation it was given.
FIXED_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
    # Otherwise a dozen client tools are deferred behind a tool-search tool
    # and the model does not see their schemas.
    "ENABLE_TOOL_SEARCH": "false",
    # Otherwise the CLI silently swaps some full model ids (claude-opus-4-1-...) for its newest model.
    "CLAUDE_CODE_DISABLE_LEGACY_MODEL_REMAP": "1",
    # No compaction of any kind: otherwise, on a "prompt is too long" 400, CLI
    # 2.1.330 summarises and trims the history and asks again (7 API calls for
    # one request, measured); it also compacts on its own once a history looks
    # big. The model must see exactly the client's conversation, and the
    # client must see the refusal (it compacts its own conversation).
    "DISABLE_COMPACT": "1",
    "DISABLE_AUTO_COMPACT": "1",
}

# Flags that keep the user's own Claude Code setup out of proxied runs: no
# built-in tools, no settings/hooks/plugins, no MCP servers, no CLAUDE.md,
# no session files. Not --bare: it turns OAuth (subscription) login off.
# --restricted also keeps auto-memory out; --disable-slash-commands stops a
# prompt like "/model opus" from running as a CLI command. Measured against
# CLI 2.1.330: with these, no CLAUDE.md, memory, hook, MCP server or settings
# env of the user's reaches the API request or runs.
ISOLATION_ARGS = (
    "--tools", "",
    "--setting-sources", "",
    "--strict-mcp-config",
    "--no-session-persistence",
    "--restricted",
    "--disable-slash-commands",
)


@frozen
class CLISettings:
    """How the daemon runs the CLI: set once from the command line."""

    claude: str
    max_retries: int = 2  # as --cli-retries
    cli_env: tuple[tuple[str, str], ...] = ()


@frozen
class TurnSettings:
    """
    What a request may change between two turns of one CLI: CLI 2.1.330 takes
    them in place (an `apply_flag_settings` control request, measured: the next
    turn's API request has the new thinking, effort and max_tokens, and the
    conversation is unchanged), so they are not part of a process's shape. Not
    inside a turn: a turn held on tool calls goes on with the settings it began
    with (measured too).
    """

    effort: str | None = None  # the CLI's --effort; None: thinking off
    max_tokens: int | None = None

    @property
    def thinking(self) -> bool:
        return self.effort is not None

    def change(self, other: TurnSettings) -> str | None:
        """What another turn's settings change: thinking, effort or max_tokens; None: nothing."""
        if self.thinking != other.thinking:
            return "thinking"
        if self.effort != other.effort:
            return "effort"
        return "max_tokens" if self.max_tokens != other.max_tokens else None

    def args(self) -> list[str]:
        return ["--effort", self.effort] if self.effort is not None else []

    def env(self) -> dict[str, str]:
        env = {}
        if self.max_tokens is not None:
            env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(self.max_tokens)
        if not self.thinking:
            # The CLI turns adaptive thinking on by itself; a request that asks for none expects it off.
            env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
        return env

    def flag_settings(self, fixed_env: Mapping[str, str]) -> dict:
        """
        The settings that make a running CLI's next turns as if it had been
        started with these; an empty value is the CLI's default, a null effort
        its own default effort. What --cli-env fixes stays as it is.
        """
        env = {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "", "CLAUDE_CODE_DISABLE_THINKING": "",
               **self.env()}
        return {"effortLevel": self.effort,
                "env": {k: v for k, v in env.items() if k not in fixed_env}}


@frozen
class RunPlan:
    model: str  # what the CLI runs: an alias resolved to its full id when the CLI has said it
    system_prompt: str
    # stdin in batches: every batch but the last ends with a history message
    # the CLI acknowledges with a result line; the next batch waits for it.
    stdin: tuple[bytes, ...]
    env: Mapping[str, str]  # fixed at spawn; a turn's settings add theirs
    base_args: tuple[str, ...]  # fixed at spawn, without --model
    # The model as asked (`sonnet` stays an alias): a process's shape, the same
    # whether or not the alias was resolved when it started.
    family: str = ""
    tools: tuple[Tool, ...] = ()
    # The control request that registers the tools' MCP server; written before
    # any turn (for a pre-started process, at its start).
    initialize: bytes = b""
    settings: TurnSettings = TurnSettings()  # as the request asks
    # For a turn replayed in a new CLI: thinking goes off when the API would
    # refuse it (the tool loop's last call has no signed thinking to go back).
    cold_settings: TurnSettings = TurnSettings()

    # Cached: the pool and the live sessions compare shapes on every request, and the
    # system prompt alone can be 50 KB.
    @cached_property
    def shape(self) -> dict[str, str]:
        """
        What a CLI process is fixed to at spawn, part by part (a turn's settings
        are not: they change in place), each part as a digest.
        """
        def digest(obj: object) -> str:
            return hashlib.sha256(json.dumps(obj).encode("utf-8")).hexdigest()

        return {"model": digest(self.family), "system": digest(self.system_prompt),
                "tools": digest(self.initialize.decode("utf-8")),
                "options": digest([self.base_args, sorted(self.env.items())])}

    @cached_property
    def warm_key(self) -> str:
        """What a pre-started process must share with this run: all fixed at spawn."""
        return hashlib.sha256(json.dumps(self.shape, sort_keys=True).encode()).hexdigest()

    @property
    def continuable(self) -> bool:
        """
        Whether the CLI's conversation is what the client gets: not with an output
        schema (the CLI's history holds its StructuredOutput tool call, the client JSON).
        """
        return "--json-schema" not in self.base_args

    def argv(self, system_prompt_file: str, settings: TurnSettings) -> list[str]:
        # The system prompt goes through a private file: one argv string is capped
        # at 128 KiB and every argv is visible in `ps`.
        return [*self.base_args, "--model", self.model, *settings.args(),
                "--system-prompt-file", system_prompt_file]

    def spawn_env(self, settings: TurnSettings) -> dict[str, str]:
        # --cli-env (in self.env) wins over a turn's settings.
        return {**settings.env(), **self.env}


def child_env(settings: CLISettings, environ: Mapping[str, str]) -> dict:
    env = {k: v for k, v in environ.items() if k in INHERITED or k.startswith("LC_")}
    env.update(FIXED_ENV)
    # Each run gets a scratch CLAUDE_CONFIG_DIR (the runner makes it), so the
    # user's .claude.json (account e-mail, projects) stays out of prompts. The
    # login is found through this instead: the user's config dir, or "" for the
    # CLI's default (~/.claude, or the default keychain item on macOS).
    env["CLAUDE_SECURESTORAGE_CONFIG_DIR"] = environ.get(
        "CLAUDE_SECURESTORAGE_CONFIG_DIR", environ.get("CLAUDE_CONFIG_DIR", ""))
    env["CLAUDE_CODE_MAX_RETRIES"] = str(settings.max_retries)
    env.update(settings.cli_env)
    return env


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _unslashed(content: tuple[dict, ...]) -> list[dict]:
    # The CLI runs a user message whose (last) text block starts with "/" as a
    # slash command even with --disable-slash-commands; a leading space on
    # every such block makes them all plain text.
    return [{**b, "text": " " + b["text"]} if b["type"] == "text" and b["text"].startswith("/")
            else b for b in content]


def user_line(message: Message, query: bool = True) -> bytes:
    line: dict = {"type": "user", "message": {"role": "user", "content": _unslashed(message.content)},
                  "parent_tool_use_id": None}
    if not query:
        # Appended to the history as a turn of its own, without asking the model.
        line["shouldQuery"] = False
    return _line(line)


def assistant_line(message: Message, index: int, model: str) -> bytes:
    stop = "tool_use" if any(b["type"] == "tool_use" for b in message.content) else "end_turn"
    return _line({"type": "assistant", "message": {
        "id": f"msg_history_{index}", "type": "message", "role": "assistant", "model": model,
        "content": list(message.content), "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}})


def stdin_batches(request: NeutralRequest, model: str) -> tuple[bytes, ...]:
    """
    The conversation as the CLI's stream-json input. Earlier messages are
    replayed as real turns: an assistant line joins the history at once, a
    user line with shouldQuery false does when the CLI has acknowledged it
    (a result line), so each is sent only after the one before is in place.
    Measured on CLI 2.1.330: the API request then holds every message as its
    own turn, tool calls as tool_use and results as tool_result blocks.
    """
    batches: list[bytes] = []
    current = b""
    for index, message in enumerate(request.conversation.history):
        if message.role == "assistant":
            current += assistant_line(message, index, model)
        else:
            batches.append(current + user_line(message, query=False))
            current = b""
    batches.append(current + user_line(request.conversation.last))
    return tuple(batches)


def _feature_args(request: NeutralRequest) -> list[str]:
    args = []
    if request.offers_tools:
        # Tool calls wait for the proxy's permission, which never comes: the
        # run ends once the model's message is complete, before anything runs.
        args += ["--permission-prompt-tool", "stdio"]
    if request.output is not None:
        args += ["--json-schema", json.dumps(request.output.schema, separators=(",", ":"))]
    return args


def cold_settings(request: NeutralRequest, model: str) -> TurnSettings:
    """
    The settings of a turn replayed in a new CLI. Inside a tool loop the API
    wants the last call's signed thinking block back when thinking is on, and
    CLI 2.1.330 replays a history turn's thinking block only when the turn
    names the model it runs (measured): never an alias, so aliases run under
    the full id the CLI resolves them to. Without that block, thinking goes off.
    """
    settings = TurnSettings(request.effort, request.max_tokens)
    conversation = request.conversation
    if settings.thinking and conversation.ends_tool_loop() and not (
            conversation.last_call_signed() and model not in ALIASES):
        return TurnSettings(None, request.max_tokens)
    return settings


def build_plan(request: NeutralRequest, settings: CLISettings, environ: Mapping[str, str],
               aliases: Mapping[str, str] | None = None) -> RunPlan:
    """`aliases`: the full id the CLI runs for each alias, as far as it has said."""
    family = request.model.cli_model
    model = (aliases or {}).get(family, family)
    return RunPlan(
        model=model,
        family=family,
        system_prompt=request.system,
        # The conversation goes on stdin, never argv: no size cap, not in `ps`.
        stdin=stdin_batches(request, model),
        env=child_env(settings, environ),
        settings=TurnSettings(request.effort, request.max_tokens),
        cold_settings=cold_settings(request, model),
        base_args=(
            settings.claude,
            "-p",
            "--verbose",
            "--output-format", "stream-json",
            "--input-format", "stream-json",
            "--include-partial-messages",
            *ISOLATION_ARGS,
            *_feature_args(request),
        ),
        tools=request.tools if request.offers_tools else (),
        initialize=_line(initialize_request(request.tools)) if request.offers_tools else b"",
    )
