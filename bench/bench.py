"""
What the proxy adds over running the Claude Code CLI yourself.

Starts the mock Anthropic API (tests/mock_anthropic.py) and the daemon
(`twistd -n claudeproxy`), then alternates the same streamed request through
the bare CLI (same argv and environment as the proxy builds) and through the
proxy, timing spawn/request → first text and → end. Prints a markdown table
and writes the raw figures to bench/results/.

    python bench/bench.py --cli .cache/cli/node_modules/.bin/claude -n 30

With --api chat,responses,messages the proxy side is each wire API in turn
(the same request in each API's shape), so the doors are compared in one run.

With --history 0,10,50 it measures instead what earlier turns cost: the same
request through the proxy after that many user/assistant pairs, each replayed
to the CLI as a turn of its own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from claude_proxy.openai_chat.parse import parse_chat_request  # noqa: E402
from claude_proxy.plan import CLISettings, build_plan  # noqa: E402

PROMPT = "Say hello"
BODY = {"model": "claude-sonnet-4", "stream": True,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": PROMPT}]}

# Each wire API: its path, the same request in its shape, the bytes of a line that
# carries the first text, and of the line that ends the stream.
APIS = {
    "chat": ("/v1/chat/completions", BODY, b'"content":"', b"data: [DONE]"),
    "responses": ("/v1/responses", {"model": "claude-sonnet-4", "stream": True,
                                    "instructions": "Be brief.", "input": PROMPT},
                  b'"type":"response.output_text.delta"', b"event: response.completed"),
    "messages": ("/v1/messages", {"model": "claude-sonnet-4", "stream": True, "max_tokens": 1024,
                                  "system": "Be brief.",
                                  "messages": [{"role": "user", "content": PROMPT}]},
                 b'"type":"text_delta"', b"event: message_stop"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mock() -> tuple[subprocess.Popen, str]:
    mock = subprocess.Popen([sys.executable, "-m", "tests.mock_anthropic", "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = mock.stdout.readline().split()
    if line[:1] != ["LISTENING"]:
        raise SystemExit(f"mock did not start: {line}")
    return mock, f"http://127.0.0.1:{line[1]}"


def scratch_env(base: Path) -> dict:
    home = base / "home"
    (home / ".claude").mkdir(parents=True)
    return {"PATH": os.environ["PATH"], "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude")}


def start_bare(cli: str, env: dict, cli_env: tuple, work: Path,
               body: dict = BODY) -> tuple[subprocess.Popen, Path, float]:
    """
    The CLI started directly, exactly as the proxy would run it (argv, environment,
    per-run scratch dirs), its one user message written: the process, its scratch
    dir (the caller removes it) and when it was started.
    """
    plan = build_plan(parse_chat_request(body), CLISettings(cli, 0, cli_env), env)
    run = Path(tempfile.mkdtemp(dir=work))
    prompt_file = run / "system-prompt.txt"
    prompt_file.write_text(plan.system_prompt)
    for name in ("tmp", "config"):
        (run / name).mkdir()
    env = {"CLAUDE_CODE_TMPDIR": str(run / "tmp"), "CLAUDE_CONFIG_DIR": str(run / "config"),
           **plan.spawn_env(plan.cold_settings)}
    started = time.perf_counter()
    proc = subprocess.Popen(plan.argv(str(prompt_file), plan.cold_settings), env=env, cwd=run, bufsize=0,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    [batch] = plan.stdin  # one user message: no history to replay
    proc.stdin.write(batch)
    proc.stdin.close()
    return proc, run, started


def bare_cli_once(cli: str, env: dict, cli_env: tuple, work: Path) -> tuple[float, float]:
    """The CLI run directly: times to its first text and to its result."""
    proc, run, started = start_bare(cli, env, cli_env, work)
    # Raw reads, not line iteration, so the bare side is timed as tightly as possible.
    first = None
    seen = b""
    fd = proc.stdout.fileno()
    while b'"type":"result"' not in seen:
        data = os.read(fd, 1 << 16)
        if not data:
            break
        seen = seen[-64:] + data
        if first is None and b'"text_delta"' in seen:
            first = time.perf_counter()
    total = time.perf_counter()
    proc.wait()
    shutil.rmtree(run)
    return first - started, total - started


def with_history(pairs: int) -> dict:
    earlier = []
    for i in range(pairs):
        earlier += [{"role": "user", "content": f"Earlier question {i}"},
                    {"role": "assistant", "content": f"Earlier answer {i}"}]
    messages = [BODY["messages"][0], *earlier, BODY["messages"][1]]
    return {**BODY, "messages": messages}


def proxy_once(port: int, body: dict = BODY, api: str = "chat") -> tuple[float, float]:
    path, _, text_mark, end_mark = APIS[api]
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = conn.getresponse()
    first = None
    for line in response:
        if first is None and line.startswith(b"data: ") and text_mark in line \
                and b'"content":""' not in line:
            first = time.perf_counter()
        if line.startswith(end_mark):
            break
    total = time.perf_counter()
    conn.close()
    return first - started, total - started


def wait_idle(port: int) -> None:
    """The proxy answers at the result line; its CLI exits just after. Let it, so
    the next bare run does not share the CPU with it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        # /metrics, not /health: /health starts the CLI (--version, auth status) every 10 s.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        if b"\nclaude_proxy_cli_processes 0.0\n" in conn.getresponse().read():
            return
        time.sleep(0.01)
    raise SystemExit("the daemon's CLI processes did not finish within 60 s")


def wait_healthy(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the daemon exited during start-up")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the daemon did not become healthy")


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p95 * 1000


def history_table(port: int, counts: list[int], n: int) -> None:
    samples: dict[int, list] = {c: [] for c in counts}
    for i in range(n):
        for count in counts if i % 2 == 0 else counts[::-1]:
            samples[count].append(proxy_once(port, with_history(count)))
            wait_idle(port)
    print(f"n = {n} streamed requests each through the proxy; mock API on loopback\n")
    print("| earlier user/assistant pairs | time to first token (median) | p95 | total (median) |")
    print("| --- | --- | --- | --- |")
    for count in counts:
        ttft, ttft_p95 = summary([s[0] for s in samples[count]])
        total, _ = summary([s[1] for s in samples[count]])
        print(f"| {count} | {ttft:.0f} ms | {ttft_p95:.0f} ms | {total:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", default=shutil.which("claude"), help="the Claude Code CLI")
    parser.add_argument("-n", type=int, default=30, help="requests per side")
    parser.add_argument("--history", help="comma-separated counts of earlier user/assistant pairs")
    parser.add_argument("--api", default="chat",
                        help=f"comma-separated wire APIs for the proxy side ({', '.join(APIS)})")
    parser.add_argument("--warm", type=int, default=0,
                        help="the daemon's --warm (0: every request starts the CLI, as bare runs do)")
    args = parser.parse_args()
    if not args.cli:
        raise SystemExit("no Claude Code CLI: pass --cli")
    args.cli = os.path.abspath(args.cli)  # the daemon runs in a scratch directory

    mock, mock_url = start_mock()
    base = Path(tempfile.mkdtemp(prefix="claude-proxy-bench-"))
    env = scratch_env(base)
    cli_env = (("ANTHROPIC_BASE_URL", mock_url), ("ANTHROPIC_API_KEY", "sk-bench"))
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "claudeproxy", "--claude", args.cli,
         "--listen", f"tcp:{port}:interface=127.0.0.1", "--cli-retries", "0",
         "--warm", str(args.warm),
         *[a for name, value in cli_env for a in ("--cli-env", f"{name}={value}")]],
        cwd=base, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, daemon)
        work = base / "bare"
        work.mkdir()
        bare_cli_once(args.cli, env, cli_env, work)  # warm the page cache for both sides
        proxy_once(port)
        if args.history:
            history_table(port, [int(c) for c in args.history.split(",")], args.n)
            return
        apis = args.api.split(",")
        bare: list = []
        proxied: dict[str, list] = {api: [] for api in apis}
        sides = ["bare", *apis]
        for i in range(args.n):
            # Forward then backward, so no side always runs first or last.
            for side in sides if i % 2 == 0 else sides[::-1]:
                if side == "bare":
                    bare.append(bare_cli_once(args.cli, env, cli_env, work))
                else:
                    proxied[side].append(proxy_once(port, APIS[side][1], side))
                    wait_idle(port)
    finally:
        daemon.terminate()
        mock.terminate()
        daemon.wait()
        mock.wait()
        shutil.rmtree(base, ignore_errors=True)

    print(f"n = {args.n} streamed requests each, alternating; mock API on loopback\n")
    print("| API | measure | bare CLI median | p95 | proxy median | p95 | added (median) | ratio |"
          " added (median of pairs) | ratio (median of pairs) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for api in apis:
        for what, index in (("time to first token", 0), ("total", 1)):
            b_med, b_p95 = summary([s[index] for s in bare])
            p_med, p_p95 = summary([s[index] for s in proxied[api]])
            pairs = list(zip(bare, proxied[api]))
            paired = statistics.median(p[index] - b[index] for b, p in pairs) * 1000
            # P1 on the total row: the steadiest form of "cold proxy / bare CLI".
            paired_ratio = statistics.median(p[index] / b[index] for b, p in pairs)
            print(f"| {api} | {what} | {b_med:.0f} ms | {b_p95:.0f} ms | {p_med:.0f} ms "
                  f"| {p_p95:.0f} ms | {p_med - b_med:+.1f} ms | {p_med / b_med:.3f} "
                  f"| {paired:+.1f} ms | {paired_ratio:.3f} |")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench-{int(time.time())}.json").write_text(json.dumps(
        {"n": args.n, "bare": bare, "proxy": proxied}, indent=1))


if __name__ == "__main__":
    main()
