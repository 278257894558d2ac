"""
Live conversations end to end: the real CLI behind two daemons on one mock API,
one keeping live sessions and one replaying every conversation (--sessions 0).
A continued turn must send the API the same messages as a cold replay of the
same history; what must not continue never does; and no process or slot is
ever left behind.
"""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet.defer import ensureDeferred, gatherResults

from tests.integration.daemons import alive, eventually
from tests.integration.test_daemon import CHAT

MESSAGES, RESPONSES = "/v1/messages", "/v1/responses"
SYSTEM = "Be brief."
TOOLS = [{"type": "function", "function": {"name": n, "parameters": {
    "type": "object", "properties": {"arg": {"type": "string"}}}}} for n in ("read", "exec")]
FULL_MODEL = "claude-sonnet-4-5-20250929"  # a full id: the CLI replays a history turn's thinking


def chat_body(messages, **over):
    body = {"model": "claude-sonnet-4",
            "messages": [{"role": "system", "content": SYSTEM}, *messages]}
    body.update(over)
    return body


def echo(message: dict) -> dict:
    """An assistant message as an SDK sends it back (re-serialized)."""
    out = {"role": "assistant", "content": message.get("content"), "annotations": [],
           "refusal": None}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    return out


def calls(*names: str) -> str:
    spec = json.dumps([{"name": n, "input": {"arg": n}} for n in names])
    return f"[[mock:tools calls='{spec}']]"


async def ask(daemon, body, path=CHAT, **kw) -> dict:
    response = await daemon.post(path, body, **kw)
    assert response.code == 200, await response.text()
    return await response.json()


def _id(value: str) -> str:
    bare = "".join(c for c in value if c.isalnum())
    return bare[4:] if bare.startswith("call") else bare


def _blocks(content) -> list:
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    out = []
    for block in content:
        block = {k: v for k, v in block.items() if k != "cache_control"}
        if block["type"] == "text" and block["text"].startswith("<system-reminder>"):
            continue  # the CLI's own date/environment reminders
        if block["type"] == "tool_use":
            block["id"] = _id(block["id"])
        if block["type"] == "tool_result":
            block["tool_use_id"] = _id(block["tool_use_id"])
            block["content"] = _blocks(block["content"])
        out.append(block)
    return out


def sent(recorded) -> dict:
    """What the CLI sent the API, less its own environment notes and cache marks."""
    body = recorded.body
    return {"tools": body.get("tools"),
            "messages": [(m["role"], _blocks(m["content"])) for m in body["messages"]
                         if m["role"] != "system"]}


async def compare(live, cold, mock_api, body, path=CHAT, **kw):
    """The request continued on `live` and replayed on `cold` sends the API the same."""
    before = live.runner.sessions.snapshot().continued
    mock_api.reset()
    live_answer = await ask(live, body, path, **kw)
    seen = live.runner.sessions.snapshot()
    assert seen.continued == before + 1, seen.fallbacks
    continued = mock_api.requests[-1]
    mock_api.reset()
    cold_answer = await ask(cold, body, path, **kw)
    assert sent(continued) == sent(mock_api.requests[-1])
    return live_answer, cold_answer


def pair(start_daemon):
    return start_daemon("--warm", "0"), start_daemon("--warm", "0", "--sessions", "0")


@pytest_twisted.ensureDeferred
async def test_a_second_turn_sends_what_a_replay_sends(start_daemon, mock_api):
    live, cold = pair(start_daemon)
    first = [{"role": "user", "content": "hello"}]
    message = (await ask(live, chat_body(first)))["choices"][0]["message"]
    second = first + [echo(message), {"role": "user", "content": "and more"}]
    answers = await compare(live, cold, mock_api, chat_body(second))
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["MOCK REPLY to: and more"] * 2
    # And the third turn continues the same session again, streamed this time.
    third = second + [echo(answers[0]["choices"][0]["message"]),
                      {"role": "user", "content": "and a third"}]
    response = await live.post(CHAT, chat_body(third, stream=True))
    assert b"[DONE]" in await response.content()
    assert live.runner.sessions.snapshot().continued == 2


@pytest_twisted.ensureDeferred
async def test_tool_results_continue_the_held_calls(start_daemon, mock_api):
    live, cold = pair(start_daemon)
    for names in (("read",), ("read", "exec")):  # one call, then two parallel calls
        first = [{"role": "user", "content": f"go {calls(*names)}"}]
        message = (await ask(live, chat_body(first, tools=TOOLS)))["choices"][0]["message"]
        assert [c["function"]["name"] for c in message["tool_calls"]] == list(names)
        assert live.runner.sessions.snapshot().waiting_for_tools == 1
        results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result of {c['id']}"}
                   for c in message["tool_calls"]]
        body = chat_body(first + [echo(message), *results], tools=TOOLS)
        live_answer, _ = await compare(live, cold, mock_api, body)
        assert live_answer["choices"][0]["finish_reason"] == "stop"
        assert live_answer["usage"]["completion_tokens"] == 7  # its own message only


@pytest_twisted.ensureDeferred
async def test_a_turns_settings_reach_the_api_in_place(start_daemon, mock_api):
    live = start_daemon("--warm", "0")
    first = [{"role": "user", "content": f"go {calls('read')}"}]
    message = (await ask(live, chat_body(first, tools=TOOLS, reasoning_effort="low",
                                         max_tokens=1000)))["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "r"}]
    looped = first + [echo(message), *results]
    answer = await ask(live, chat_body(looped, tools=TOOLS, reasoning_effort="low",
                                       max_tokens=1000))
    follow = looped + [echo(answer["choices"][0]["message"]), {"role": "user", "content": "so?"}]
    answer = await ask(live, chat_body(follow, tools=TOOLS, reasoning_effort="high",
                                       max_tokens=500))
    follow += [echo(answer["choices"][0]["message"]), {"role": "user", "content": "and?"}]
    await ask(live, chat_body(follow, tools=TOOLS))
    seen = live.runner.sessions.snapshot()
    assert seen.continued == 3 and not seen.fallbacks

    def settings(recorded):
        body = recorded.body
        return ((body.get("thinking") or {}).get("type"), body["output_config"]["effort"],
                body["max_tokens"])

    # The tool loop keeps thinking on (an OpenAI client never sends it back: a replay would
    # have to turn it off); the next turns change effort and limit, or turn thinking off.
    assert [settings(r) for r in mock_api.requests] == [
        ("adaptive", "low", 1000), ("adaptive", "low", 1000), ("adaptive", "high", 500),
        (None, "medium", 128000)]


@pytest_twisted.ensureDeferred
async def test_an_image_in_a_tool_result(start_daemon, mock_api):
    from tests.integration.test_fidelity import PNG
    live, cold = pair(start_daemon)
    first = [{"role": "user", "content": f"look {calls('read')}"}]
    message = (await ask(live, chat_body(first, tools=TOOLS)))["choices"][0]["message"]
    result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": [
        {"type": "text", "text": "a picture"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}
    await compare(live, cold, mock_api, chat_body(first + [echo(message), result], tools=TOOLS))


@pytest_twisted.ensureDeferred
async def test_a_turn_after_a_thinking_block(start_daemon, mock_api):
    live, cold = pair(start_daemon)
    headers = {"anthropic-version": ["2023-06-01"]}

    def body(messages):
        return {"model": FULL_MODEL, "max_tokens": 4096, "system": SYSTEM, "messages": messages,
                "thinking": {"type": "enabled", "budget_tokens": 2048}}

    first = [{"role": "user", "content": "think [[mock:thinking]]"}]
    answer = await ask(live, body(first), MESSAGES, headers=headers)
    assert [b["type"] for b in answer["content"]] == ["thinking", "text"]
    second = first + [{"role": "assistant", "content": answer["content"]},
                      {"role": "user", "content": "and more"}]
    await compare(live, cold, mock_api, body(second), MESSAGES, headers=headers)


@pytest_twisted.ensureDeferred
async def test_responses_previous_response_id_and_codex_full_input(start_daemon, mock_api):
    live, cold = pair(start_daemon)
    # previous_response_id: each daemon's own stored response.
    ids = [(await ask(d, {"model": "claude-sonnet-4", "instructions": SYSTEM, "input": "hello"},
                      RESPONSES))["id"] for d in (live, cold)]
    mock_api.reset()
    await ask(live, {"model": "claude-sonnet-4", "instructions": SYSTEM, "input": "and more",
                     "previous_response_id": ids[0]}, RESPONSES)
    assert live.runner.sessions.snapshot().continued == 1
    continued = mock_api.requests[-1]
    mock_api.reset()
    await ask(cold, {"model": "claude-sonnet-4", "instructions": SYSTEM, "input": "and more",
                     "previous_response_id": ids[1]}, RESPONSES)
    assert sent(continued) == sent(mock_api.requests[-1])
    # Codex: store false, the whole input each time, tool calls included.
    items = [{"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": f"go {calls('read')}"}]}]
    base = {"model": "claude-sonnet-4", "instructions": SYSTEM, "store": False,
            "tools": [{"type": "function", "name": "read", "parameters": TOOLS[0]["function"][
                "parameters"]}]}
    output = (await ask(live, {**base, "input": items}, RESPONSES))["output"]
    call = next(o for o in output if o["type"] == "function_call")
    items += [call, {"type": "function_call_output", "call_id": call["call_id"], "output": "done"}]
    await compare(live, cold, mock_api, {**base, "input": items}, RESPONSES)
    assert live.runner.sessions.snapshot().continued == 2


@pytest_twisted.ensureDeferred
async def test_what_differs_is_never_continued(start_daemon, mock_api):
    live = start_daemon("--warm", "0", "--api-key", "sk-one", "--api-key", "sk-two")
    one = {"headers": {"authorization": ["Bearer sk-one"]}}
    first = [{"role": "user", "content": "hello"}]
    message = (await ask(live, chat_body(first), **one))["choices"][0]["message"]
    follow = {"role": "user", "content": "and more"}
    variants = {
        "edited history": (chat_body([{"role": "user", "content": "hullo"}, echo(message),
                                      follow]), one),
        "regenerated answer": (chat_body(first + [{"role": "assistant", "content": "other"},
                                                  follow]), one),
        "other tools": (chat_body(first + [echo(message), follow], tools=TOOLS), one),
        "other system prompt": ({**chat_body(first + [echo(message), follow]),
                                 "messages": [{"role": "system", "content": "Be long."},
                                              *first, echo(message), follow]}, one),
        "other key": (chat_body(first + [echo(message), follow]),
                      {"headers": {"authorization": ["Bearer sk-two"]}}),
    }
    for what, (body, kw) in variants.items():
        await ask(live, body, **kw)
        assert live.runner.sessions.snapshot().continued == 0, what
    fallbacks = live.runner.sessions.snapshot().fallbacks
    # Each session holds one conversation: a variant of it finds the session changed, then none.
    assert sum(fallbacks.values()) == 5 and set(fallbacks) <= {
        "no_session", "tools_changed", "system_changed", "key_changed"}
    health = await (await live.get("/health", **one)).json()
    assert health["sessions"]["continued"] == 0 and health["sessions"]["live"] >= 1
    metrics = await (await live.get("/metrics", **one)).text()
    assert 'claude_proxy_session_fallbacks_total{reason="tools_changed"}' in metrics


@pytest_twisted.ensureDeferred
async def test_two_clients_with_the_same_opening_at_once(start_daemon, mock_api):
    live = start_daemon("--warm", "0")
    first = [{"role": "user", "content": "hello"}]
    replies = await _both(live, [chat_body(first), chat_body(first)])
    assert [r["choices"][0]["message"]["content"] for r in replies] == ["MOCK REPLY to: hello"] * 2
    assert live.runner.sessions.count == 2
    seconds = [chat_body(first + [echo(r["choices"][0]["message"]),
                                  {"role": "user", "content": f"client {i}"}])
               for i, r in enumerate(replies)]
    replies = await _both(live, seconds)
    assert [r["choices"][0]["message"]["content"] for r in replies] == [
        "MOCK REPLY to: client 0", "MOCK REPLY to: client 1"]
    assert live.runner.sessions.snapshot().continued == 2 and live.runner.sessions.count == 2


async def _both(daemon, bodies):
    """The requests at once, as two clients would send them."""
    return await gatherResults([ensureDeferred(ask(daemon, b)) for b in bodies])


def pids(runner) -> list[int]:
    sessions = runner.sessions
    return [s.pid for s in sessions._parked] if sessions is not None else []


async def gone(pid_list, timeout=10.0):
    await eventually(lambda: not alive(pid_list), timeout)


@pytest_twisted.ensureDeferred
async def test_expiry_eviction_disconnect_and_stop_leave_nothing(start_daemon, mock_api):
    live = start_daemon("--warm", "0", "--max-concurrent", "1", "--session-ttl", "2")
    runner = live.runner
    # Expiry.
    await ask(live, chat_body([{"role": "user", "content": "hello"}]))
    [pid] = pids(runner)
    await eventually(lambda: runner.sessions.count == 0, 10)
    await gone([pid])
    assert runner.sessions.snapshot().ended["ttl"] == 1
    # Eviction under --max-concurrent 1: another conversation takes the slot at once.
    await ask(live, chat_body([{"role": "user", "content": "one"}]))
    [pid] = pids(runner)
    await ask(live, chat_body([{"role": "user", "content": "two"}]))
    await gone([pid])
    assert runner.sessions.snapshot().ended["room"] == 1
    assert runner.in_flight == 0 and runner.waiting == 0
    # A client that goes away while its tool results are being answered.
    first = [{"role": "user", "content": f"go {calls('read')}"}]
    message = (await ask(live, chat_body(first, tools=TOOLS)))["choices"][0]["message"]
    [pid] = pids(runner)
    mock_api.force = "stall"
    body = chat_body(first + [echo(message), {"role": "tool", "content": "r",
                                              "tool_call_id": message["tool_calls"][0]["id"]}],
                     tools=TOOLS)
    pending = treq.post(live.url + CHAT, json=body)  # not streamed: no answer before the end
    await eventually(lambda: runner.sessions.snapshot().continued == 1
                     and mock_api.open_streams == 1)
    pending.cancel()
    await gone([pid])
    await eventually(lambda: runner.in_flight == 0 and runner.sessions.count == 0)
    mock_api.force = None
    # Stopping the daemon with a live session.
    await ask(live, chat_body([{"role": "user", "content": "last"}]))
    [pid] = pids(runner)
    await live.service.stopService()
    await gone([pid])
    assert runner.in_flight == 0 and runner.sessions.count == 0
