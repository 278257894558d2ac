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
    "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR",
    "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_SECURESTORAGE_CONFIG_DIR",
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
ISOLATION_ARGS = (
    "--tools", "",
    "--setting-sources", "",
    "--strict-mcp-config",
    "--no-session-persistence",
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
    env["CLAUDE_CODE_MAX_RETRIES"] = str(settings.max_retries)
    if max_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_tokens)
    env.update(settings.cli_env)
    return env


def user_line(text: str) -> bytes:
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
