"""
The per-delta hot path in isolation: one CLI stdout line → parse → answer →
SSE chunk → write, with no process and no socket.

    python bench/hotpath.py [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402

from claude_proxy.answer import Answer  # noqa: E402
from claude_proxy.events import parse_line  # noqa: E402
from claude_proxy.openai_chat.encode import ChatEncoder  # noqa: E402
from claude_proxy.writers import StreamWriter  # noqa: E402

ENCODERS = {
    "chat": lambda: ChatEncoder("chatcmpl-bench", "claude-haiku-4", 0, True),
}

# A text delta as CLI 2.1.330 prints it (tests/samples/cli-2.1.330/stream-json-partial.jsonl).
LINE = json.dumps({
    "type": "stream_event",
    "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
    "session_id": "451f4119-2710-484f-866b-8bc82a49e19c", "parent_tool_use_id": None,
    "uuid": "bc8d2b6c-1b2c-4a2e-9b7e-0f4f4e0a2a11", "api_message_id": "msg_mock_0001",
}).encode()


class SinkRequest:
    """As much of a twisted.web Request as a committed stream uses."""

    channel = None
    written = 0

    def setResponseCode(self, code: int) -> None:
        pass

    def setHeader(self, name: bytes, value: bytes) -> None:
        pass

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += len(data)


def relay(n: int, api: str = "chat") -> None:
    writer = StreamWriter(ENCODERS[api](), SinkRequest(), Clock(), answer=Answer())
    writer.begin(None)
    for _ in range(n):
        writer.cli_event(parse_line(LINE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--api", choices=sorted(ENCODERS), action="append",
                        help="the wire API whose stream to measure (default: each)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for api in args.api or sorted(ENCODERS):
        started = time.perf_counter()
        relay(args.n, api)
        seconds = time.perf_counter() - started
        print(f"{api}: {args.n} deltas: {args.n / seconds:,.0f} deltas/s, "
              f"{seconds / args.n * 1e6:.1f} µs each")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(relay, args.n, (args.api or ["chat"])[0])
        pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
