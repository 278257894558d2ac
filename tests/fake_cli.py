#!/usr/bin/env python3
"""
A fake Claude Code CLI for the fuzz, fault, hygiene and load suites: it starts
in ~30 ms instead of ~400 ms and needs no API. Everything it prints on stdout
is real CLI 2.1.330 output, replayed from tests/samples/ — never invented — so
the proxy cannot tell it from the real CLI by what it says.

It answers `--version` and `auth status --json` as the real CLI does, and
otherwise reads stream-json from stdin up to the first user message. A
directive in that message's text chooses what it does:

    (none)                  replay cli-2.1.330/stream-json-partial.jsonl, exit 0
    [[fake:sample NAME]]    replay tests/samples/NAME (exit 1 if its result is an error)
    [[fake:crash]]          write to stderr and exit 1, nothing on stdout
    [[fake:signal]]         die of SIGKILL, nothing on stdout
    [[fake:garbage]]        lines that are not JSON, then exit 0 without a result
    [[fake:half]]           the first half of the partial sample, then exit 0
    [[fake:hang]]           print the init line, then nothing until killed
    [[fake:hang_child]]     as hang, with a child process of its own in its process group
    [[fake:half_hang]]      the first half of the partial sample, then nothing until killed
    [[fake:slow SECONDS]]   the partial sample, SECONDS between lines (slow, never silent)
    [[fake:linger]]         the partial sample with its result, then no exit until killed
    [[fake:stderr_flood]]   4 MiB on stderr, nothing on stdout, exit 1
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent / "samples"
DEFAULT = "cli-2.1.330/stream-json-partial.jsonl"
VERSION = "2.1.330 (Claude Code)"
# `claude auth status --json` of a subscription login (CLI 2.1.330).
LOGGED_IN = {"loggedIn": True, "authMethod": "claude.ai", "apiProvider": "firstParty",
             "subscriptionType": "max"}
DIRECTIVE = re.compile(r"\[\[fake:(\w+)(?: ([\w./-]+))?\]\]")


def sample(name: str) -> list[str]:
    return [line for line in (SAMPLES / name).read_text().splitlines() if line.strip()]


def first_user_text() -> str:
    """The text of the first user message on stdin (the rest of stdin is not needed)."""
    for raw in sys.stdin:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if message.get("type") != "user":
            continue
        content = message.get("message", {}).get("content")
        if isinstance(content, str):
            return content
        return " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict))
    return ""


def emit(lines: list[str]) -> None:
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def hang(lines: list[str]) -> None:
    emit(lines[:1])  # the init line: the CLI has started, and says nothing more
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(VERSION)
        return 0
    if argv[:2] == ["auth", "status"]:
        print(json.dumps(LOGGED_IN, indent=2))
        return 0
    found = DIRECTIVE.search(first_user_text())
    kind, arg = (found.group(1), found.group(2)) if found else ("sample", DEFAULT)
    lines = sample(DEFAULT)
    if kind == "sample":
        lines = sample(arg)
        emit(lines)
        return 1 if json.loads(lines[-1]).get("is_error") else 0
    if kind == "crash":
        sys.stderr.write("Error: the fake CLI crashed (as asked)\n")
        return 1
    if kind == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "garbage":
        emit(["not json at all", "{\"truncated\": ", "\x00\x01 binary-ish"])
        return 0
    if kind == "half":
        emit(lines[: len(lines) // 2])
        return 0
    if kind == "hang_child":
        subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        hang(lines)
    if kind == "hang":
        hang(lines)
    if kind == "half_hang":
        emit(lines[: len(lines) // 2])
        hang([])
    if kind == "slow":
        for line in lines:
            emit([line])
            time.sleep(float(arg or 1))
        return 0
    if kind == "linger":
        emit(lines)
        hang([])
    if kind == "stderr_flood":
        for _ in range(64):
            sys.stderr.write("noise " * 10922 + "\n")  # 64 KiB a line
        sys.stderr.flush()
        return 1
    sys.stderr.write(f"fake CLI: unknown directive {kind!r}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
