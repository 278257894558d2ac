"""
A run plan: everything one CLI run needs (argv, environment, stdin, system
prompt), built from a validated request. Pure: no files, no processes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from attrs import frozen

from claude_proxy.chat import ChatRequest, prompt_text

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
# auto-memory, or retry for minutes while a client waits.
FIXED_ENV = {
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
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
    max_retries: int = 1
    cli_env: tuple[tuple[str, str], ...] = ()


@frozen
class RunPlan:
    model: str
    system_prompt: str
    stdin: bytes
    env: Mapping[str, str]
    base_args: tuple[str, ...]

    def argv(self, system_prompt_file: str) -> list[str]:
        # The system prompt goes through a private file: one argv string is capped
        # at 128 KiB and every argv is visible in `ps`.
        return [*self.base_args, "--system-prompt-file", system_prompt_file]


def child_env(settings: CLISettings, environ: Mapping[str, str], max_tokens: int | None) -> dict:
    env = {k: v for k, v in environ.items() if k in INHERITED or k.startswith("LC_")}
    env.update(FIXED_ENV)
    # Each run gets a scratch CLAUDE_CONFIG_DIR (the runner makes it), so the
    # user's .claude.json (account e-mail, projects) stays out of prompts. The
    # login is found through this instead: the user's config dir, or "" for the
    # CLI's default (~/.claude, or the default keychain item on macOS).
    env["CLAUDE_SECURESTORAGE_CONFIG_DIR"] = environ.get(
        "CLAUDE_SECURESTORAGE_CONFIG_DIR", environ.get("CLAUDE_CONFIG_DIR", ""))
    env["CLAUDE_CODE_MAX_RETRIES"] = str(settings.max_retries)
    if max_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_tokens)
    env.update(settings.cli_env)
    return env


def user_line(text: str) -> bytes:
    # The CLI runs a user message that starts with "/" as a slash command even
    # with --disable-slash-commands; a leading space makes it plain text.
    if text.startswith("/"):
        text = " " + text
    message = {"type": "user", "message": {"role": "user", "content": text}}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def build_plan(request: ChatRequest, settings: CLISettings, environ: Mapping[str, str]) -> RunPlan:
    return RunPlan(
        model=request.model.cli_model,
        system_prompt=request.system,
        # The conversation goes on stdin, never argv: no size cap, not in `ps`.
        stdin=user_line(prompt_text(request.turns)),
        env=child_env(settings, environ, request.max_tokens),
        base_args=(
            settings.claude,
            "-p",
            "--verbose",
            "--output-format", "stream-json",
            "--input-format", "stream-json",
            "--include-partial-messages",
            "--model", request.model.cli_model,
            *ISOLATION_ARGS,
        ),
    )
