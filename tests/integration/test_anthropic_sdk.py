"""
The official anthropic SDK, as users run it, against the daemon's Messages
API. The SDK blocks, so it runs in a thread while the reactor serves.
"""

import json

import pytest_twisted
from anthropic import Anthropic, NotFoundError
from twisted.internet.threads import deferToThread

from tests.mock_anthropic import OUTPUT_TOKENS, THINKING_TEXT

WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def client(daemon) -> Anthropic:
    return Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=60)


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk(daemon, mock_api):
    sdk = client(daemon)

    models = await deferToThread(lambda: [m.id for m in sdk.models.list()])
    assert models == ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"]

    counted = await deferToThread(lambda: sdk.messages.count_tokens(
        model="claude-sonnet-4", system="be brief", tools=[WEATHER],
        messages=[{"role": "user", "content": "how many tokens?"}]))
    assert counted.input_tokens > 0

    created = await deferToThread(lambda: sdk.messages.create(
        model="claude-sonnet-4", max_tokens=1024, system="be brief",
        messages=[{"role": "user", "content": "from the sdk"}]))
    assert created.content[0].text == "MOCK REPLY to: from the sdk"
    assert created.stop_reason == "end_turn" and created.usage.output_tokens == OUTPUT_TOKENS
    assert created.usage.input_tokens == 11 and created.usage.cache_read_input_tokens == 5

    def raw_stream():
        return [e.type for e in sdk.messages.create(
            model="claude-haiku-4", max_tokens=1024, stream=True,
            messages=[{"role": "user", "content": "raw stream"}])]

    kinds = await deferToThread(raw_stream)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds

    try:
        await deferToThread(lambda: sdk.messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x"}]))
    except NotFoundError as e:
        assert e.body["error"]["type"] == "not_found_error"
    else:
        raise AssertionError("an unknown model must be a 404")


@pytest_twisted.ensureDeferred
async def test_anthropic_sdk_stream_helper_accumulates_thinking_text_and_tool_calls(daemon, mock_api):
    sdk = client(daemon)
    spec = json.dumps([{"name": "weather", "input": {"city": "Paris"}},
                       {"name": "weather", "input": {"city": "Oslo"}}])

    def stream():
        with sdk.messages.stream(
                model="claude-sonnet-4", max_tokens=4096, tools=[WEATHER],
                thinking={"type": "enabled", "budget_tokens": 2048},
                messages=[{"role": "user",
                           "content": f"weather? [[mock:tools calls='{spec}' text=\"Checking.\"]]"}]) as s:
            texts = list(s.text_stream)
            return texts, s.get_final_message()

    texts, final = await deferToThread(stream)
    assert "".join(texts) == "Checking."
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.name, b.input) for b in final.content[1:]] == [("weather", {"city": "Paris"}),
                                                             ("weather", {"city": "Oslo"})]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == OUTPUT_TOKENS

    def thinking():
        with sdk.messages.stream(
                model="claude-sonnet-4", max_tokens=4096, thinking={"type": "adaptive"},
                messages=[{"role": "user", "content": "ponder [[mock:thinking]]"}]) as s:
            return s.get_final_message()

    thought = await deferToThread(thinking)
    assert thought.content[0].type == "thinking" and thought.content[0].thinking == THINKING_TEXT
    assert thought.content[0].signature
    assert thought.content[1].text.startswith("MOCK REPLY to: ponder")
