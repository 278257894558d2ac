"""
The official openai SDK's `client.responses.create`, streamed and not, against
the daemon. The SDK blocks, so it runs in a thread while the reactor serves.
"""

import json

import pytest_twisted
from openai import OpenAI
from twisted.internet.threads import deferToThread

from tests.integration.test_fidelity import calls_directive


def client(daemon) -> OpenAI:
    return OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest_twisted.ensureDeferred
async def test_openai_sdk_responses(daemon, mock_api):
    sdk = client(daemon)
    response = await deferToThread(lambda: sdk.responses.create(
        model="claude-sonnet-4", instructions="Be brief.", input="from the sdk"))
    assert response.output_text == "MOCK REPLY to: from the sdk"
    assert response.status == "completed" and response.usage.input_tokens == 19
    assert response.usage.input_tokens_details.cached_tokens == 5
    again = await deferToThread(lambda: sdk.responses.retrieve(response.id))
    assert again.output_text == response.output_text

    tools = [{"type": "function", "name": "read", "description": "Read a file.",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                             "required": ["path"], "additionalProperties": False},
              "strict": True}]
    directive = calls_directive(("read", {"path": "notes.md"}))

    def stream():
        with sdk.responses.stream(model="claude-haiku-4", input=f"read it {directive}",
                                  tools=tools) as events:
            kinds = [event.type for event in events]
            return kinds, events.get_final_response()

    kinds, final = await deferToThread(stream)
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.function_call_arguments.delta" in kinds
    [call] = final.output
    assert call.type == "function_call" and call.name == "read"
    assert json.loads(call.arguments) == {"path": "notes.md"}

    follow_up = await deferToThread(lambda: sdk.responses.create(
        model="claude-haiku-4", previous_response_id=final.id, tools=tools, stream=True,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "- milk"}]))
    events = await deferToThread(lambda: list(follow_up))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("MOCK REPLY to:")
    assert events[-1].response.previous_response_id == final.id
    assert "- milk" in json.dumps(mock_api.requests[-1].body["messages"])
