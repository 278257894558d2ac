"""
Agent loops through the official SDKs as agents run them, with thinking on:
a task of tool steps and a follow-up, each whole conversation in one inner CLI
(the CLI names its session in every API request), the model thinking in every
step. (The real Codex and Claude Code do the same in test_codex.py and
test_claude_code_client.py.)
"""

import json

import pytest
import pytest_twisted
from anthropic import Anthropic
from openai import OpenAI
from twisted.internet.threads import deferToThread

CITIES = ("Paris", "Oslo", "Lima")
WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def task(thinking: bool) -> str:
    steps = json.dumps([[{"name": "weather", "input": {"city": c}}] for c in CITIES])
    flag = " thinking=1" if thinking else ""
    return f"Plan a trip. [[mock:steps calls='{steps.replace(']]', '] ]')}'{flag}]]"


def assert_one_thinking_cli(daemon, requests) -> None:
    assert len(requests) == len(CITIES) + 2  # the steps, the answer, the follow-up
    assert len({r.session_id for r in requests}) == 1 and requests[0].session_id
    assert all((r.body.get("thinking") or {}).get("type") == "adaptive" for r in requests)
    sessions = daemon.runner.sessions
    seen = sessions.snapshot()
    assert seen.continued == len(CITIES) + 1 and not seen.fallbacks


@pytest.mark.parametrize("thinking", [False, True], ids=["plain", "thinking"])
@pytest_twisted.ensureDeferred
async def test_an_anthropic_sdk_agent_with_thinking(daemon, mock_api, thinking):
    sdk = Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=60)

    def run() -> str:
        messages = [{"role": "user", "content": task(thinking)}]
        for _ in range(len(CITIES) + 1):
            reply = sdk.messages.create(model="claude-sonnet-4", max_tokens=4096, tools=[WEATHER],
                                        thinking={"type": "adaptive"}, messages=messages)
            messages.append({"role": "assistant", "content": reply.content})
            calls = [b for b in reply.content if b.type == "tool_use"]
            if not calls:
                break
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": c.id, "content": f"sunny in {c.input['city']}"}
                for c in calls]})
        messages.append({"role": "user", "content": "and the food?"})
        final = sdk.messages.create(model="claude-sonnet-4", max_tokens=4096, tools=[WEATHER],
                                    thinking={"type": "adaptive"}, messages=messages)
        return final.content[-1].text

    assert await deferToThread(run) == "MOCK REPLY to: and the food?"
    assert_one_thinking_cli(daemon, mock_api.requests)


@pytest.mark.parametrize("thinking", [False, True], ids=["plain", "thinking"])
@pytest_twisted.ensureDeferred
async def test_an_openai_sdk_agent_with_reasoning(daemon, mock_api, thinking):
    sdk = OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    tools = [{"type": "function", "function": {"name": "weather",
                                               "parameters": WEATHER["input_schema"]}}]

    def run() -> str:
        messages = [{"role": "user", "content": task(thinking)}]
        for _ in range(len(CITIES) + 1):
            reply = sdk.chat.completions.create(model="claude-sonnet-4", tools=tools,
                                                reasoning_effort="medium", messages=messages)
            message = reply.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            if not message.tool_calls:
                break
            messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"}
                         for c in message.tool_calls]
        messages.append({"role": "user", "content": "and the food?"})
        final = sdk.chat.completions.create(model="claude-sonnet-4", tools=tools,
                                            reasoning_effort="medium", messages=messages)
        return final.choices[0].message.content

    assert await deferToThread(run) == "MOCK REPLY to: and the food?"
    assert_one_thinking_cli(daemon, mock_api.requests)


@pytest_twisted.ensureDeferred
async def test_a_replayed_tool_loop_keeps_its_signed_thinking(start_daemon, mock_api):
    # No live sessions: each step is replayed in a new CLI. Under an alias, too, the CLI
    # runs the full id its initialize answer named, so the signed thinking goes back
    # and thinking stays on.
    daemon = start_daemon("--sessions", "0", "--warm", "0")
    sdk = Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=60)

    def step(messages):
        return sdk.messages.create(model="claude-sonnet-4", max_tokens=4096, tools=[WEATHER],
                                   thinking={"type": "adaptive"}, messages=messages)

    def run():
        messages = [{"role": "user", "content": task(thinking=True)}]
        reply = step(messages)
        messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": reply.content[-1].id, "content": "sunny"}]}]
        return step(messages)

    second = await deferToThread(run)
    assert [b.type for b in second.content] == ["thinking", "tool_use"]
    first, replayed = mock_api.requests
    assert first.session_id != replayed.session_id  # a new CLI
    assert replayed.body["model"] == first.body["model"] == "claude-sonnet-5-5"
    assert (replayed.body.get("thinking") or {}).get("type") == "adaptive"
    [assistant] = [m for m in replayed.body["messages"] if m["role"] == "assistant"]
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][0]["signature"]
