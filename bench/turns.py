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
          does not take tools; its second turn is the reference);
  codex   a Codex-like task on the Responses API (store false, the whole input every time,
          reasoning effort medium, encrypted reasoning asked for, an exec_command tool): the
          call (not timed), its tool-result step, then a follow-up (not D);
  claude_code  a Claude-Code-like task on the Messages API (adaptive thinking, effort high,
          max_tokens 32000, system blocks, a Write tool): the same three steps (not D).
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
MEASURES = ("first", "second", "tools", "codex", "claude_code")
# What each measure times: a name for each timed step.
STEPS = {"first": ("first",), "second": ("second",), "tools": ("tools",),
         "codex": ("codex tool result", "codex follow-up"),
         "claude_code": ("claude code tool result", "claude code follow-up")}
ROWS = [row for m in MEASURES for row in STEPS[m]]
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


def post(port: int, path: str, body: dict) -> dict:
    """A non-streamed request's answer (the untimed first step of a task)."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, json.dumps({**body, "stream": False}),
                     {"content-type": "application/json", "anthropic-version": "2023-06-01"}
                     if path == "/v1/messages" else {"content-type": "application/json"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def complete(port: int, body: dict) -> dict:
    return post(port, "/v1/chat/completions", body)["choices"][0]["message"]


def stream_answer(port: int, path: str, body: dict) -> tuple[float, object]:
    """
    One streamed request: its time to first text, and its answer as the client keeps it
    (Responses: the completed response's output items; Messages: the content blocks).
    """
    import http.client
    api = "responses" if path == "/v1/responses" else "messages"
    mark = (b'"type":"response.output_text.delta"' if api == "responses"
            else b'"type":"text_delta"')
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    first, events = None, []
    for line in conn.getresponse():
        if not line.startswith(b"data: "):
            continue
        if first is None and mark in line:
            first = time.perf_counter() - started
        event = json.loads(line[6:])
        events.append(event)
        if event.get("type") in ("response.completed", "message_stop"):
            break
    conn.close()
    if api == "responses":
        return first, events[-1]["response"]["output"]
    blocks: list[dict] = []
    inputs: dict[int, str] = {}
    for event in events:
        if event["type"] == "content_block_start":
            blocks.append(dict(event["content_block"]))
        elif event["type"] == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "input_json_delta":
                inputs[event["index"]] = inputs.get(event["index"], "") + delta["partial_json"]
            else:  # text, thinking and signature deltas add to the field they name
                key = {"text_delta": "text", "thinking_delta": "thinking",
                       "signature_delta": "signature"}[delta["type"]]
                block[key] = block.get(key, "") + delta[key]
    for index, text in inputs.items():
        blocks[index]["input"] = json.loads(text)
    return first, blocks


EXEC = json.dumps([{"name": "exec_command", "input": {"cmd": "ls"}}])
WRITE = json.dumps([{"name": "Write", "input": {"file_path": "/tmp/x", "content": "x"}}])


def codex_steps(port: int, i: int, quiet: Callable[[], None]) -> list[float]:
    """Codex: store false, the whole input each time, reasoning on; a call, its result, more."""
    base = {"model": "claude-sonnet-4", "store": False, "stream": True, "tool_choice": "auto",
            "reasoning": {"effort": "medium", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "tools": [{"type": "function", "name": "exec_command", "parameters": {
                "type": "object", "properties": {"cmd": {"type": "string"}}}}]}
    items = [{"type": "message", "role": "developer",
              "content": [{"type": "input_text", "text": "You are a coding agent."}]},
             {"type": "message", "role": "user", "content": [
                 {"type": "input_text", "text": f"List the files {i} [[mock:tools calls='{EXEC}']]"}]}]
    out = post(port, "/v1/responses", {**base, "input": items})["output"]
    [call] = [o for o in out if o["type"] == "function_call"]
    items += [*out, {"type": "function_call_output", "call_id": call["call_id"],
                     "output": "Process exited with code 0\nOutput:\na.txt"}]
    quiet()
    ttft, answer = stream_answer(port, "/v1/responses", {**base, "input": items})
    items += [*answer, {"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "And now?"}]}]
    quiet()
    return [ttft, stream_answer(port, "/v1/responses", {**base, "input": items})[0]]


def claude_code_steps(port: int, i: int, quiet: Callable[[], None]) -> list[float]:
    """Claude Code: adaptive thinking, system blocks, its whole history each time."""
    base = {"model": "claude-sonnet-4", "max_tokens": 32000, "stream": True,
            "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "tools": [{"name": "Write", "input_schema": {"type": "object", "properties": {
                "file_path": {"type": "string"}, "content": {"type": "string"}}}}]}
    messages = [{"role": "user", "content": f"Write it {i} [[mock:tools calls='{WRITE}']]"}]
    reply = post(port, "/v1/messages", {**base, "messages": messages})
    [use] = [b for b in reply["content"] if b["type"] == "tool_use"]
    messages += [{"role": "assistant", "content": reply["content"]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                               "content": "File created"}]}]
    quiet()
    ttft, answer = stream_answer(port, "/v1/messages", {**base, "messages": messages})
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "And now?"}]
    quiet()
    return [ttft, stream_answer(port, "/v1/messages", {**base, "messages": messages})[0]]


def one(side: str, measure: str, i: int, servers: dict, bare) -> list[float] | None:
    """The measure's timed steps on one side, or None where the side has no such thing."""
    if side == "A":
        return [bare()[0]] if measure == "first" else None
    port = servers[side].port
    if measure == "first":
        return [stream_once(port, BODY)["ttft"]]
    if measure in ("codex", "claude_code"):
        steps = codex_steps if measure == "codex" else claude_code_steps
        return None if side == "D" else steps(port, i, servers[side].quiet)
    first, then = second_turn(i) if measure == "second" else tool_turns(i)
    reply = complete(port, first)
    servers[side].quiet()
    return [stream_once(port, then(reply))["ttft"]]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) * 1000 if xs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", default=shutil.which("claude"))
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    cli = os.path.abspath(args.cli)
    base = Path(tempfile.mkdtemp(prefix="claude-proxy-turns-"))
    samples: dict[str, dict[str, list[float]]] = {s: {r: [] for r in ROWS} for s in SIDES}
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
                    for row, value in zip(STEPS[measure], got or ()):
                        samples[side][row].append(value)
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

    med = {s: {r: median(samples[s][r]) for r in ROWS} for s in SIDES}
    d = med["D"]
    rows = ["| measure | " + " | ".join(SIDES.values()) + " | W1 / D | W1 / bare or R |",
            "| --- |" + " --- |" * (len(SIDES) + 2)]
    for m in ROWS:
        cells = [f"{med[s][m]:.0f} ms" if med[s][m] is not None else "—" for s in SIDES]
        ref = med["A"][m] if m == "first" else med["R"][m]
        # Where D cannot do it (tools), its second turn is the reference.
        d_ref = d[m] if d[m] else d["second"]
        ratio_d = f"{med['W1'][m] / d_ref:.2f}×" if d_ref and med["W1"][m] else "—"
        ratio_r = f"{med['W1'][m] / ref:.2f}×" if ref and med["W1"][m] else "—"
        rows.append(f"| {m} (median TTFT) | " + " | ".join(cells) + f" | {ratio_d} | {ratio_r} |")
    second_target = med["W1"]["second"] / d["second"] if d["second"] else None
    tools_target = med["W1"]["tools"] / d["second"] if d["second"] and med["W1"]["tools"] else None
    text = "\n".join(rows) + (
        f"\n\nn = {args.n} each. Targets: second turn W1 / D {second_target:.2f}× (≤ 0.15×); "
        f"tool-result turn and the Codex- and Claude-Code-like steps W1 / D's second turn "
        f"{tools_target or 0:.2f}× (≤ 0.15×, the rows' W1 / D); "
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
