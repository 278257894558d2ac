"""
The turns that matter to an agent, side by side in one run (real CLI, the
instant mock API, the same machine):

  A   the bare CLI (first request only: it has no conversation to keep);
  W1  the proxy as shipped: `--warm 1`, live sessions on (`--sessions 3`);
  W2  the same with `--warm 2`;
  R   the proxy replaying every conversation: `--warm 1 --sessions 0` (before live sessions);
  D   claude-max-api-proxy@1.0.0 (installed and run as bench/compare.py does).

Measures time to first token (ABBA-interleaved, -n each) of:
  first   the same first request again and again (the warm pool's case);
  second  a conversation's second turn: its first request (not timed), then that request,
          its answer and a new user message;
  tools   an agent's tool-result turn: a request that made the model call a tool (not
          timed), then the request with the tool's result (not D: claude-max-api-proxy
          does not take tools; its second turn is the reference).
And the RSS of W1's CLI processes per live session.

    python bench/turns.py --cli .cache/cli/node_modules/.bin/claude -n 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.bench import BODY, bare_cli_once, scratch_env, start_mock  # noqa: E402
from bench.compare import (  # noqa: E402
    RESULTS, descendants, http_get, redirect_fd, start_cmap, start_daemon, stop_process,
    stream_once, vmrss,
)

SIDES = {"A": "bare CLI", "W1": "proxy --warm 1", "W2": "proxy --warm 2",
         "R": "proxy, replaying (--sessions 0)", "D": "claude-max-api-proxy"}
MEASURES = ("first", "second", "tools")
TOOL = {"type": "function", "function": {"name": "read", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}}}}}
CALLS = json.dumps([{"name": "read", "input": {"path": "notes.md"}}])


def second_turn(i: int) -> tuple[dict, Callable[[dict], dict]]:
    """A conversation of its own (opening included): its first turn, then the second."""
    first = {**BODY, "messages": [BODY["messages"][0],
                                  {"role": "user", "content": f"Say hello, {i}"}]}

    def then(reply: dict) -> dict:
        return {**first, "messages": [*first["messages"],
                                      {"role": "assistant", "content": reply.get("content")},
                                      {"role": "user", "content": "And again"}]}
    return first, then


def tool_turns(i: int) -> tuple[dict, Callable[[dict], dict]]:
    first = {**BODY, "tools": [TOOL], "messages": [
        BODY["messages"][0], {"role": "user", "content": f"Read notes {i} [[mock:tools calls='{CALLS}']]"}]}

    def then(reply: dict) -> dict:
        calls = reply.get("tool_calls") or [{"id": f"call_{i}", "type": "function",
                                             "function": {"name": "read",
                                                          "arguments": '{"path": "notes.md"}'}}]
        return {**first, "messages": [
            *first["messages"],
            {"role": "assistant", "content": reply.get("content"), "tool_calls": calls},
            *[{"role": "tool", "tool_call_id": c["id"], "content": "the notes"} for c in calls]]}
    return first, then


def complete(port: int, body: dict) -> dict:
    """A non-streamed request's message (the untimed first half of a tool turn)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": False}),
                     {"content-type": "application/json"})
        return json.loads(conn.getresponse().read())["choices"][0]["message"]
    finally:
        conn.close()


def one(side: str, measure: str, i: int, servers: dict, bare) -> float | None:
    if side == "A":
        return bare()[0] if measure == "first" else None
    port = servers[side].port
    if measure == "first":
        return stream_once(port, BODY)["ttft"]
    first, then = second_turn(i) if measure == "second" else tool_turns(i)
    reply = complete(port, first)
    servers[side].quiet()
    return stream_once(port, then(reply))["ttft"]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) * 1000 if xs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", default=shutil.which("claude"))
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    cli = os.path.abspath(args.cli)
    base = Path(tempfile.mkdtemp(prefix="claude-proxy-turns-"))
    samples: dict[str, dict[str, list[float]]] = {s: {m: [] for m in MEASURES} for s in SIDES}
    rss: dict = {}
    notes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        with open(base / "mock.log", "wb") as log, redirect_fd(2, log.fileno()):
            mock, url = start_mock()
        stack.callback(stop_process, mock)
        env = scratch_env(base)
        cli_env = (("ANTHROPIC_BASE_URL", url), ("ANTHROPIC_API_KEY", "sk-bench"))
        servers = {
            "W1": start_daemon("W1", cli, env, cli_env, base, 1, stack),
            "W2": start_daemon("W2", cli, env, cli_env, base, 2, stack),
            "R": start_daemon("R", cli, env, cli_env, base, 1, stack, ("--sessions", "0")),
            "D": start_cmap(cli, env, cli_env, base, stack),
        }
        work = base / "bare"
        work.mkdir()

        def bare():
            return bare_cli_once(cli, env, cli_env, work)

        bare()
        for server in servers.values():  # the warm pool learns the shape
            stream_once(server.port, BODY)
            server.quiet()
        # One measure at a time: the warm pool keeps processes for the most recent shapes
        # (--warm of them), and a tool request is a shape of its own.
        for measure in MEASURES:
            for i in range(args.n):
                sides = [s for s in SIDES if not (s == "D" and measure == "tools")]
                for side in sides if i % 2 == 0 else sides[::-1]:
                    try:
                        got = one(side, measure, i, servers, bare)
                    except Exception as e:  # a side that cannot do it (D has no tools) is a dash
                        notes.setdefault(f"{side} {measure}", f"{type(e).__name__}: {e}")
                        got = None
                    if side in servers:
                        servers[side].quiet()
                    if got is not None:
                        samples[side][measure].append(got)
                print(f"{measure}: round {i + 1}/{args.n}", file=sys.stderr)
        # RSS: the daemon, and each of its CLI processes (live sessions and pre-started ones).
        w1 = servers["W1"]
        _, health = http_get(w1.port, "/health")
        kids = descendants(w1.proc.pid)
        sizes = []
        for pid in kids:
            with contextlib.suppress(OSError, RuntimeError):
                sizes.append(vmrss(pid))
        state = json.loads(health)
        rss = {"daemon_mib": vmrss(w1.proc.pid) / 2**20, "processes": len(sizes),
               "live": state["sessions"]["live"], "warm": state["warm"]["waiting"],
               "per_process_mib": statistics.median(sizes) / 2**20 if sizes else None,
               "continued": state["sessions"]["continued"],
               "fallbacks": state["sessions"]["fallbacks"]}

    med = {s: {m: median(samples[s][m]) for m in MEASURES} for s in SIDES}
    d = med["D"]
    rows = ["| measure | " + " | ".join(SIDES.values()) + " | W1 / D | W1 / bare or R |",
            "| --- |" + " --- |" * (len(SIDES) + 2)]
    for m in MEASURES:
        cells = [f"{med[s][m]:.0f} ms" if med[s][m] is not None else "—" for s in SIDES]
        ref = med["A"][m] if m == "first" else med["R"][m]
        ratio_d = f"{med['W1'][m] / d[m]:.2f}×" if d[m] else "—"
        ratio_r = f"{med['W1'][m] / ref:.2f}×" if ref else "—"
        rows.append(f"| {m} (median TTFT) | " + " | ".join(cells) + f" | {ratio_d} | {ratio_r} |")
    second_target = med["W1"]["second"] / d["second"] if d["second"] else None
    tools_target = med["W1"]["tools"] / d["second"] if d["second"] and med["W1"]["tools"] else None
    text = "\n".join(rows) + (
        f"\n\nn = {args.n} each. Targets: second turn W1 / D {second_target:.2f}× (≤ 0.15×); "
        f"tool-result turn W1 / D's second turn {tools_target or 0:.2f}× (≤ 0.15×); "
        f"first request W1 / D {med['W1']['first'] / d['first']:.2f}× (≤ 0.35×), "
        f"W2 / W1 {med['W2']['first'] / med['W1']['first']:.2f}× (≤ 1).\n"
        f"RSS: daemon {rss['daemon_mib']:.0f} MiB; {rss['processes']} CLI processes "
        f"({rss['live']} live sessions, {rss['warm']} pre-started), median "
        f"{rss['per_process_mib']:.0f} MiB each; continued {rss['continued']}, "
        f"fallbacks {rss['fallbacks']}." + "".join(f"\n{k}: {v}" for k, v in notes.items()))
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    (RESULTS / f"turns-{stamp}.md").write_text(text + "\n")
    (RESULTS / f"turns-{stamp}.json").write_text(json.dumps(
        {"samples": samples, "medians": med, "rss": rss}, indent=1))


if __name__ == "__main__":
    main()
