"""
The proxy side by side with the bare CLI and with claude-max-api-proxy.

One run, all against the mock Anthropic API (tests/mock_anthropic.py) and the
same Claude Code CLI:

  A  bare CLI: run directly with the argv and environment the proxy builds
     (bench.bare_cli_once);
  B  proxy cold: `twistd -n claudeproxy ... --warm 0`;
  C  proxy warm: the same with `--warm 2`;
  D  claude-max-api-proxy@1.0.0 from npm (installed into bench/.cache/), started
     as `node <pkg>/dist/server/standalone.js PORT` with the CLI first on PATH
     and the environment the proxy gives its CLI (mock URL, key, scratch HOME).

Measures: time to first token and total time of a short streamed reply
(ABBA-interleaved, -n each); 32 concurrent streams (complete / lost, p50 / p99);
the relay rate of a 20,000-delta stream; the server's own RSS idle and per
in-flight stream. Prints one markdown table; writes it with the raw figures to
bench/results/compare-*.{md,json}, and a bar chart to bench/results/compare.png
(when matplotlib is installed: pip install -r bench/requirements.txt).

    python bench/compare.py --cli .cache/cli/node_modules/.bin/claude -n 30
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/, where bench.py would shadow the bench package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.bench import (BODY, bare_cli_once, free_port, proxy_once, scratch_env,  # noqa: E402
                         start_bare, start_mock, summary, wait_healthy)
from claude_proxy.plan import CLISettings, TurnSettings, child_env  # noqa: E402

CMAP_PACKAGE = "claude-max-api-proxy"
CMAP_VERSION = "1.0.0"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"

SIDES = {"A": "bare CLI", "B": "proxy cold", "C": "proxy warm", "D": "claude-max-api-proxy"}
WARM = 2

# Replies whose full text is known on every side (the default reply quotes the prompt,
# which claude-max-api-proxy wraps in <system> tags, so it differs between sides).
BURST_DELTAS, BURST_SIZE = 100, 7
RELAY_DELTAS = 20_000


def deltas_text(n: int, size: int) -> str:
    return "".join(chr(97 + i % 26) * size for i in range(n))


def deltas_body(n: int, size: int) -> dict:
    return {**BODY, "messages": [BODY["messages"][0],
                                 {"role": "user", "content": f"[[mock:deltas n={n} size={size}]]"}]}


MiB = 1024 * 1024
PROBLEM_WORDS = ("Traceback", "Unhandled", "#error]", "#critical]", "#warn]", "Error",
                 "[Subprocess stderr]")


# -- processes --------------------------------------------------------------


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids, found, todo = children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def settle(pid: int, timeout: float = 20.0, window: float = 0.1) -> bool:
    """Wait until a server and its children (CLIs finishing, a pool refilling, a
    health probe) use no CPU to speak of, so the next sample starts on an idle machine."""
    deadline = time.monotonic() + timeout
    before = cpu_ticks([pid, *descendants(pid)])
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_ticks([pid, *descendants(pid)])
        used = sum(t - before.get(p, 0) for p, t in now.items())  # a new process counts whole
        before = now
        if used <= 1:
            return True
    return False


def vmrss(pid: int) -> int:
    """VmRSS of one process (not its children), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL; then whatever is left of its process group (it was
    started in a session of its own, so the group id is its pid)."""
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """For blocking calls without a timeout of their own (main thread only)."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what}: no end after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " / ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- streams ----------------------------------------------------------------


def delta_times(marks: list[tuple[float, int]], ends: list[int]) -> list[float]:
    """When each piece had fully arrived: the first read whose data reached its end."""
    sizes = [size for _, size in marks]
    return [marks[bisect.bisect_left(sizes, end)][0] for end in ends]


def stream_once(port: int, body: dict, timeout: float = 120.0) -> dict:
    """One streamed chat completion, every read timed; parsed once it is over."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            return {"ok": False, "error": f"HTTP {response.status}: {response.read()[:200]!r}",
                    "total": time.perf_counter() - started}
        buf, marks = bytearray(), []
        while True:
            data = response.read1(1 << 16)
            if not data:
                break
            buf += data
            marks.append((time.perf_counter(), len(buf)))
            if b"data: [DONE]" in buf[-(len(data) + 16):]:
                break
        total = time.perf_counter() - started
    finally:
        conn.close()
    pieces, ends, done, error, offset = [], [], False, None, 0
    for line in bytes(buf).split(b"\n"):
        offset += len(line) + 1
        if not line.startswith(b"data: "):
            continue
        if line.startswith(b"data: [DONE]"):
            done = True
            continue
        obj = json.loads(line[6:])
        if "error" in obj:
            error = obj["error"]
        for choice in obj.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                pieces.append(content)
                ends.append(offset - 1)
    times = delta_times(marks, ends)
    return {"ok": done and error is None, "error": error, "text": "".join(pieces),
            "chunks": len(pieces), "total": total,
            "ttft": times[0] - started if times else None,
            "first": times[0] if times else None, "last": times[-1] if times else None}


def bare_cli_stream(cli: str, env: dict, cli_env: tuple, work: Path, body: dict) -> dict:
    """The CLI run directly, as the proxy would run it (like bench.bare_cli_once, which
    only reports first and last), its stdout's text deltas timed as they are read."""
    proc, run, started = start_bare(cli, env, cli_env, work, body)
    try:
        try:
            buf, marks, fd = bytearray(), [], proc.stdout.fileno()
            while True:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                buf += data
                marks.append((time.perf_counter(), len(buf)))
                if b'"type":"result"' in buf[-(len(data) + 16):]:
                    break
            total = time.perf_counter() - started
        finally:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(10)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    pieces, ends, offset = [], [], 0
    for line in bytes(buf).split(b"\n"):
        offset += len(line) + 1
        if b'"text_delta"' not in line:
            continue
        delta = json.loads(line).get("event", {}).get("delta", {})
        if delta.get("type") == "text_delta" and delta.get("text"):
            pieces.append(delta["text"])
            ends.append(offset - 1)
    times = delta_times(marks, ends)
    return {"ok": bool(pieces), "error": None, "text": "".join(pieces), "chunks": len(pieces),
            "total": total, "ttft": times[0] - started if times else None,
            "first": times[0] if times else None, "last": times[-1] if times else None}


def relay_rate(result: dict) -> float | None:
    if not result.get("ok") or result["chunks"] < 2 or result["last"] <= result["first"]:
        return None
    return (result["chunks"] - 1) / (result["last"] - result["first"])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- servers ----------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def gauge(text: bytes, name: str) -> float | None:
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(None, 1)[1])
    return None


@dataclass
class Server:
    key: str
    proc: subprocess.Popen
    port: int
    log: Path
    kind: str  # "proxy" or "cmap"
    warm: int = 0
    notes: list[str] = field(default_factory=list)

    def quiet(self, timeout: float = 60.0) -> None:
        """After a request: its CLI has exited (and for the warm proxy, the pool is
        full again), and nothing of the server's is using the CPU."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.kind == "proxy":
                # /metrics, not /health: /health runs `claude --version` every 10 s.
                _, text = http_get(self.port, "/metrics")
                idle = gauge(text, "claude_proxy_cli_processes") == 0 and \
                    (gauge(text, "claude_proxy_warm_processes") or 0) >= self.warm
            else:
                idle = not descendants(self.proc.pid)
            if idle:
                break
            time.sleep(0.02)
        else:
            self.notes.append(f"not idle after {timeout:.0f} s")
        if not settle(self.proc.pid):
            self.notes.append("CPU did not settle")


def start_daemon(key: str, cli: str, env: dict, cli_env: tuple, base: Path, warm: int,
                 stack: contextlib.ExitStack, extra: tuple[str, ...] = ()) -> Server:
    port = free_port()
    log = servers_log(base, key)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "claudeproxy", "--claude", cli,
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--cli-retries", "0",
             *[a for name, value in cli_env for a in ("--cli-env", f"{name}={value}")],
             "--max-concurrent", "32", "--queue", "64", "--warm", str(warm), *extra],
            cwd=base, env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_process, proc)
    server = Server(key, proc, port, log, "proxy", warm)
    try:
        wait_healthy(port, proc)
    except SystemExit as e:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        raise RuntimeError(f"{e} (exit {proc.poll()}): {tail(log, 2)}") from None
    return server


def servers_log(base: Path, key: str) -> Path:
    return base / f"twistd-{key}.log"


def install_cmap() -> Path:
    """claude-max-api-proxy from npm into bench/.cache/ (git-ignored); its bin's path."""
    prefix = CACHE / f"{CMAP_PACKAGE}-{CMAP_VERSION}"
    package = prefix / "node_modules" / CMAP_PACKAGE
    if not (package / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH")
        prefix.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--ignore-scripts", "--loglevel=error", f"{CMAP_PACKAGE}@{CMAP_VERSION}"],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"npm install failed: {done.stderr.strip()[-300:]}")
    meta = json.loads((package / "package.json").read_text())
    if meta.get("version") != CMAP_VERSION:
        raise RuntimeError(f"the cache holds {CMAP_PACKAGE} {meta.get('version')}, not {CMAP_VERSION}")
    return package / meta["bin"]["claude-max-api"]


def start_cmap(cli: str, env: dict, cli_env: tuple, base: Path,
               stack: contextlib.ExitStack) -> Server:
    entry = install_cmap()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        raise RuntimeError(f"{CMAP_PACKAGE} wants node >= 20, this is {version}")
    # It spawns plain `claude` from PATH: a directory of its own with just that, first.
    bindir = base / "cmap-bin"
    bindir.mkdir()
    (bindir / "claude").symlink_to(os.path.abspath(cli))
    work = base / "cmap-work"  # its CLIs' cwd (it runs them with the built-in tools on)
    work.mkdir()
    # The environment the proxy gives its CLI (mock URL and key, no telemetry,
    # no retries), with one config dir for all runs, as the package would have.
    child = {**TurnSettings().env(), **child_env(CLISettings(cli, 0, cli_env), env)}
    child.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", CLAUDE_CONFIG_DIR=env["CLAUDE_CONFIG_DIR"])
    port = free_port()
    log = base / "cmap.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([node, str(entry), str(port)], cwd=work, env=child,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stack.callback(stop_process, proc)
    try:
        wait_healthy(port, proc)
    except SystemExit as e:
        raise RuntimeError(f"{e}: {tail(log, 3)}") from None
    return Server("D", proc, port, log, "cmap")


# -- measures ---------------------------------------------------------------


def attempt(errors: list, what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as e:  # one failed sample is recorded, not fatal
        errors.append(f"{what}: {type(e).__name__}: {e}")
        return None


def short_replies(n: int, sides: list[str], servers: dict[str, Server], bare: Callable) -> dict:
    samples: dict[str, list] = {k: [] for k in sides}
    errors: dict[str, list] = {k: [] for k in sides}
    for i in range(n):
        # ABBA order, so no side always runs right after another.
        for key in sides if i % 2 == 0 else sides[::-1]:
            if key == "A":
                got = attempt(errors[key], f"run {i}", bare)
            else:
                server = servers[key]
                got = attempt(errors[key], f"run {i}", lambda: proxy_once(server.port))
                attempt(errors[key], f"quiet {i}", server.quiet)
            if got is not None:
                samples[key].append(got)
    return {"samples": samples, "errors": errors}


def burst(server: Server, count: int, body: dict, expected: str) -> dict:
    """count streams at once, from threads; the server's RSS sampled meanwhile."""
    server.quiet()
    idle = vmrss(server.proc.pid)
    results: list[dict | None] = [None] * count
    gate = threading.Barrier(count + 1)
    peak, stop = [idle], threading.Event()

    def client(i: int) -> None:
        try:
            gate.wait(30)
            results[i] = stream_once(server.port, body, timeout=180)
        except Exception as e:
            results[i] = {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def sampler() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                peak[0] = max(peak[0], vmrss(server.proc.pid))
            stop.wait(0.01)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(count)]
    watcher = threading.Thread(target=sampler, daemon=True)
    for thread in threads:
        thread.start()
    watcher.start()
    gate.wait(30)
    deadline = time.monotonic() + 300
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    watcher.join(5)
    outcomes = [r or {"ok": False, "error": "no answer within 300 s"} for r in results]
    complete = [r for r in outcomes if r["ok"] and r.get("text") == expected]
    totals = [r["total"] for r in complete]
    attempt(server.notes, "quiet after the burst", server.quiet)
    return {"count": count, "complete": len(complete), "lost": count - len(complete),
            "p50": percentile(totals, 0.5) * 1000 if totals else None,
            "p99": percentile(totals, 0.99) * 1000 if totals else None,
            "idle_rss": idle, "peak_rss": peak[0],
            "per_stream_rss": (peak[0] - idle) / count,
            "failures": [r.get("error") or f"text of {len(r.get('text') or '')} chars"
                         for r in outcomes if r not in complete][:5],
            "totals": totals}


def relay(n: int, sides: list[str], servers: dict[str, Server], bare: Callable) -> dict:
    expected = deltas_text(RELAY_DELTAS, 1)
    body = deltas_body(RELAY_DELTAS, 1)
    runs: dict[str, list] = {k: [] for k in sides}
    errors: dict[str, list] = {k: [] for k in sides}
    for i in range(n):
        for key in sides if i % 2 == 0 else sides[::-1]:
            if key == "A":
                got = attempt(errors[key], f"run {i}", lambda: bare(body))
            else:
                server = servers[key]
                got = attempt(errors[key], f"run {i}",
                              lambda: stream_once(server.port, body, timeout=300))
                attempt(errors[key], f"quiet {i}", server.quiet)
            if got is None:
                continue
            if got["text"] != expected:
                errors[key].append(f"run {i}: {len(got['text'])} of {RELAY_DELTAS} characters"
                                   f" ({got.get('error')})")
                continue
            runs[key].append({"rate": relay_rate(got), "chunks": got["chunks"],
                              "span": got["last"] - got["first"], "total": got["total"]})
    return {"runs": runs, "errors": errors}


# -- report -----------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def verdict(checks: list[bool | None]) -> str:
    known = [c for c in checks if c is not None]
    if not known:
        return "n/a"
    return "pass" if all(known) else "FAIL"


def figures(data: dict) -> dict:
    """The medians and ratios the table and the chart show, per side (None: n/a)."""
    fig: dict[str, dict] = {k: {} for k in SIDES}
    samples = data["short"]["samples"]
    for key in SIDES:
        got = samples.get(key) or []
        if got:
            fig[key]["ttft"], fig[key]["ttft_p95"] = summary([s[0] for s in got])
            fig[key]["total"], fig[key]["total_p95"] = summary([s[1] for s in got])
        rates = [r["rate"] for r in data["relay"]["runs"].get(key) or [] if r["rate"]]
        if rates:
            fig[key]["relay"] = statistics.median(rates)
        b = data["bursts"].get(key)
        if b:
            fig[key].update(complete=b["complete"], lost=b["lost"], p50=b["p50"], p99=b["p99"],
                            per_stream_mib=b["per_stream_rss"] / MiB)
        if key in data["rss_idle"]:
            fig[key]["idle_mib"] = data["rss_idle"][key] / MiB
    pairs = list(zip(samples.get("A") or [], samples.get("B") or []))
    for what, index in (("ttft", 0), ("total", 1)):
        if "ttft" in fig["A"] and "ttft" in fig["B"]:
            fig["B"][f"{what}_added"] = fig["B"][what] - fig["A"][what]
            fig["B"][f"{what}_added_paired"] = statistics.median(
                (p[index] - b[index]) * 1000 for b, p in pairs)
    return fig


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(data: dict, fig: dict) -> str:
    A, B, C, D = (fig[k] for k in "ABCD")
    na = {k: data["na"].get(k) for k in SIDES}

    def cell(side: dict, key: str, spec: str = ".0f", unit: str = "", p95: str | None = None) -> str:
        if key not in side or side[key] is None:
            return "n/a"
        text = fmt(side[key], spec, unit)
        return f"{text} (p95 {fmt(side[p95], spec)})" if p95 else text

    rows = []
    warm_ratio = ratio(C.get("ttft"), D.get("ttft"))
    rows.append(("time to first token, median", cell(A, "ttft", unit=" ms", p95="ttft_p95"),
                 cell(B, "ttft", unit=" ms", p95="ttft_p95"),
                 cell(C, "ttft", unit=" ms", p95="ttft_p95"),
                 cell(D, "ttft", unit=" ms", p95="ttft_p95"),
                 f"warm / claude-max-api-proxy: {fmt(warm_ratio, '.2f', '×')}; "
                 f"cold / claude-max-api-proxy: {fmt(ratio(B.get('ttft'), D.get('ttft')), '.2f', '×')}",
                 "warm ≤ 0.35×", verdict([None if warm_ratio is None else warm_ratio <= 0.35])))
    rows.append(("time to first token, cold − bare", "", "", "", "",
                 f"{fmt(B.get('ttft_added'), '+.1f', ' ms')} "
                 f"(paired {fmt(B.get('ttft_added_paired'), '+.1f', ' ms')})",
                 "≤ 15 ms", verdict([None if B.get("ttft_added") is None
                                     else B["ttft_added"] <= 15])))
    rows.append(("total, median", cell(A, "total", unit=" ms", p95="total_p95"),
                 cell(B, "total", unit=" ms", p95="total_p95"),
                 cell(C, "total", unit=" ms", p95="total_p95"),
                 cell(D, "total", unit=" ms", p95="total_p95"),
                 f"cold − bare: {fmt(B.get('total_added'), '+.1f', ' ms')} "
                 f"(paired {fmt(B.get('total_added_paired'), '+.1f', ' ms')})",
                 "≤ 15 ms", verdict([None if B.get("total_added") is None
                                     else B["total_added"] <= 15])))

    def burst_cell(side: dict) -> str:
        return "n/a" if "lost" not in side else f"{side['complete']} complete, {side['lost']} lost"

    rows.append((f"{data['concurrency']} concurrent streams", "—", burst_cell(B), burst_cell(C),
                 burst_cell(D), "", "0 lost",
                 verdict([None if "lost" not in s else s["lost"] == 0 for s in (B, C, D)])))
    rows.append((f"{data['concurrency']} concurrent, total p50 / p99", "—",
                 *(("n/a" if s.get("p50") is None else f"{s['p50']:.0f} / {s['p99']:.0f} ms")
                   for s in (B, C, D)),
                 f"cold / claude-max-api-proxy p50: {fmt(ratio(B.get('p50'), D.get('p50')), '.2f', '×')}",
                 "", ""))
    relay_checks = [None if s.get("relay") is None or D.get("relay") is None
                    else s["relay"] >= D["relay"] for s in (B, C)]
    rows.append((f"relay rate, {RELAY_DELTAS:,}-delta stream",
                 *(cell(s, "relay", ",.0f", " /s") for s in (A, B, C, D)),
                 f"cold / claude-max-api-proxy: {fmt(ratio(B.get('relay'), D.get('relay')), '.2f', '×')}; "
                 f"warm / claude-max-api-proxy: {fmt(ratio(C.get('relay'), D.get('relay')), '.2f', '×')}; "
                 f"cold / bare: {fmt(ratio(B.get('relay'), A.get('relay')), '.2f', '×')}; "
                 f"claude-max-api-proxy / bare: {fmt(ratio(D.get('relay'), A.get('relay')), '.2f', '×')}",
                 "proxy ≥ claude-max-api-proxy", verdict(relay_checks)))
    rows.append(("server RSS, idle", "—", *(cell(s, "idle_mib", ".1f", " MiB") for s in (B, C, D)),
                 f"cold / claude-max-api-proxy: "
                 f"{fmt(ratio(B.get('idle_mib'), D.get('idle_mib')), '.2f', '×')}",
                 "daemon ≤ 60 MiB",
                 verdict([None if s.get("idle_mib") is None else s["idle_mib"] <= 60 for s in (B, C)])))
    rows.append(("server RSS per in-flight stream", "—",
                 *(cell(s, "per_stream_mib", ".2f", " MiB") for s in (B, C, D)),
                 f"(peak during the {data['concurrency']} streams − idle) / {data['concurrency']}",
                 "daemon ≤ 0.5 MiB",
                 verdict([None if s.get("per_stream_mib") is None else s["per_stream_mib"] <= 0.5
                          for s in (B, C)])))
    head = ["measure", *(f"{SIDES[k]} ({k})" for k in SIDES), "comparison", "target", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    notes = [f"- {SIDES[k]} ({k}) n/a: {why}" for k, why in na.items() if why]
    for part in ("short", "relay"):
        for key, errs in data[part]["errors"].items():
            if errs:
                notes.append(f"- {SIDES[key]} ({key}), {part}: {len(errs)} failed: {errs[0]}")
    for key, b in data["bursts"].items():
        if b["failures"]:
            notes.append(f"- {SIDES[key]} ({key}), burst: e.g. {b['failures'][0]}")
    for key, server_notes in data["server_notes"].items():
        if server_notes:
            notes.append(f"- {SIDES[key]} ({key}): {len(server_notes)}× {server_notes[0]}")
    intro = (f"n = {data['n']} short streamed replies per side (ABBA-interleaved), "
             f"{data['relay_n']} relay runs per side, {data['concurrency']} concurrent streams "
             f"of {BURST_DELTAS} deltas once per server; mock Anthropic API on loopback; "
             f"CLI {data['cli_version']}; wall time {data['wall']:.0f} s.")
    return "\n".join([intro, "", *lines, *([""] + notes if notes else [])])


def chart(fig: dict, concurrency: int, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -r bench/requirements.txt)"
    panels = [("time to first token, median (ms)", "ttft", "ABCD", None),
              ("total, median (ms)", "total", "ABCD", None),
              (f"{concurrency} concurrent: total p50 (ms)", "p50", "BCD", None),
              ("relay rate (deltas/s)", "relay", "ABCD", None),
              ("server RSS idle (MiB)", "idle_mib", "BCD", 60),
              ("server RSS per in-flight stream (MiB)", "per_stream_mib", "BCD", 0.5)]
    colours = {"A": "#888888", "B": "#1f77b4", "C": "#2ca02c", "D": "#d62728"}
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, key, sides, target) in zip(axes.flat, panels):
        labels = [f"{SIDES[k]}\n({k})" for k in sides]
        values = [fig[k].get(key) for k in sides]
        bars = ax.bar(labels, [v or 0 for v in values], color=[colours[k] for k in sides])
        for bar, value in zip(bars, values):
            ax.annotate("n/a" if value is None else f"{value:,.{2 if value < 10 else 0}f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=1, label="daemon target")
            ax.set_ylim(0, max([target, *(v or 0 for v in values)]) * 1.3)
            ax.legend(fontsize=8, loc="upper right")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    figure.suptitle("claude-proxy vs bare CLI vs claude-max-api-proxy (mock API)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"chart: {path.relative_to(ROOT)}"


# -- main -------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cli", default=shutil.which("claude"), help="the Claude Code CLI")
    parser.add_argument("-n", type=int, default=30, help="short streamed replies per side")
    parser.add_argument("--relay-n", type=int, default=5, help="20,000-delta streams per side")
    parser.add_argument("--concurrency", type=int, default=32, help="streams at once")
    args = parser.parse_args()
    if not args.cli:
        raise SystemExit("no Claude Code CLI: pass --cli")
    args.cli = os.path.abspath(args.cli)
    began = time.monotonic()
    cli_version = subprocess.run([args.cli, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()

    base = Path(tempfile.mkdtemp(prefix="claude-proxy-compare-"))
    data: dict[str, Any] = {"n": args.n, "relay_n": args.relay_n, "concurrency": args.concurrency,
                            "cli": args.cli, "cli_version": cli_version, "na": {},
                            "rss_idle": {}, "rss_fresh": {}, "bursts": {}, "server_notes": {}}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        stack.callback(kill_leftovers)  # runs after the servers are stopped (LIFO)
        # The mock logs every request to stderr: into a file, not over the table.
        with open(base / "mock.log", "wb") as mock_log, redirect_fd(2, mock_log.fileno()):
            mock, mock_url = start_mock()
        stack.callback(stop_process, mock)
        env = scratch_env(base)
        cli_env = (("ANTHROPIC_BASE_URL", mock_url), ("ANTHROPIC_API_KEY", "sk-bench"))
        print(f"mock API at {mock_url}; scratch {base}", file=sys.stderr)

        servers: dict[str, Server] = {}
        starters = {"B": lambda: start_daemon("B", args.cli, env, cli_env, base, 0, stack),
                    "C": lambda: start_daemon("C", args.cli, env, cli_env, base, WARM, stack),
                    "D": lambda: start_cmap(args.cli, env, cli_env, base, stack)}
        for key, start in starters.items():
            try:
                servers[key] = start()
                data["rss_fresh"][key] = vmrss(servers[key].proc.pid)
            except Exception as e:
                data["na"][key] = str(e)
            print(f"{SIDES[key]}: " + (f"port {servers[key].port}, pid {servers[key].proc.pid}"
                                       if key in servers else f"n/a ({data['na'][key]})"),
                  file=sys.stderr)

        work = base / "bare"
        work.mkdir()

        def bare() -> tuple[float, float]:
            with time_limit(120, "bare CLI run"):
                return bare_cli_once(args.cli, env, cli_env, work)

        def bare_relay(body: dict) -> dict:
            with time_limit(300, "bare CLI relay run"):
                return bare_cli_stream(args.cli, env, cli_env, work, body)

        # One request each first: page cache, and the warm pool learns the request's shape.
        attempt([], "warm-up", bare)
        for key, server in list(servers.items()):
            errors: list[str] = []
            attempt(errors, "warm-up", lambda: proxy_once(server.port))
            attempt(errors, "quiet", server.quiet)
            if errors:
                data["na"][key] = f"the first request failed: {errors[0]}"
                del servers[key]
                continue
            data["rss_idle"][key] = vmrss(server.proc.pid)
        sides = ["A", *servers]

        print(f"short replies: n = {args.n} per side ...", file=sys.stderr)
        data["short"] = short_replies(args.n, sides, servers, bare)
        print("relay ...", file=sys.stderr)
        data["relay"] = relay(args.relay_n, sides, servers, bare_relay)
        for key, server in servers.items():
            print(f"{args.concurrency} concurrent streams: {SIDES[key]} ...", file=sys.stderr)
            got = attempt(server.notes, f"{args.concurrency} concurrent streams",
                          lambda: burst(server, args.concurrency,
                                        deltas_body(BURST_DELTAS, BURST_SIZE),
                                        deltas_text(BURST_DELTAS, BURST_SIZE)))
            if got is not None:
                data["bursts"][key] = got
        for key, server in servers.items():
            # What the server logged that looks like trouble: a note, and in the raw file.
            problems = [line for line in server.log.read_text(errors="replace").splitlines()
                        if any(word in line for word in PROBLEM_WORDS)]
            data.setdefault("server_log_problems", {})[key] = problems[:20]
            if problems:
                server.notes.append(f"{len(problems)} log lines like: {problems[0][:200]}")
        data["server_notes"] = {k: s.notes for k, s in servers.items()}

    data["wall"] = time.monotonic() - began
    fig = figures(data)
    text = table(data, fig)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    (RESULTS / f"compare-{stamp}.md").write_text(text + "\n")
    (RESULTS / f"compare-{stamp}.json").write_text(json.dumps(
        {**data, "figures": fig}, indent=1, default=str))
    print(f"\nraw figures: bench/results/compare-{stamp}.json; "
          + chart(fig, args.concurrency, RESULTS / "compare.png"), file=sys.stderr)


@contextlib.contextmanager
def redirect_fd(fd: int, to: int):
    saved = os.dup(fd)
    os.dup2(to, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def kill_leftovers() -> None:
    """A bare CLI cut off by a time limit is still our child: end it, by pid."""
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        traceback.print_exc()
        raise SystemExit(130)
