"""
The official openai SDK, as users run it, against the daemon. The SDK blocks,
so it runs in a thread while the reactor serves.
"""

import pytest_twisted
from openai import OpenAI
from twisted.internet.threads import deferToThread


def client(daemon) -> OpenAI:
    return OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest_twisted.ensureDeferred
async def test_openai_sdk_models_and_completions(daemon):
    sdk = client(daemon)

    models = await deferToThread(lambda: [m.id for m in sdk.models.list()])
    assert "claude-sonnet-4" in models

    completion = await deferToThread(lambda: sdk.chat.completions.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "from the sdk"}]))
    assert completion.choices[0].message.content == "MOCK REPLY to: from the sdk"
    assert completion.usage.prompt_tokens == 19

    def stream():
        chunks = list(sdk.chat.completions.create(
            model="claude-haiku-4", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "be brief"},
                      {"role": "user", "content": "streamed sdk"}]))
        return chunks

    chunks = await deferToThread(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "MOCK REPLY to: streamed sdk"
    assert chunks[-1].usage.completion_tokens == 7
    assert {c.model for c in chunks} == {"claude-haiku-4"}
