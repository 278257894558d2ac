"""count_tokens' estimate, and the Anthropic model listing: pure, no CLI."""

import pytest

from claude_proxy.anthropic_messages import count, models
from claude_proxy.anthropic_messages.door import MessagesDoor
from claude_proxy.anthropic_messages.parse import parse_messages_request
from claude_proxy.errors import APIError
from tests.anthropic_messages.test_parse import PNG, WEATHER, tool_loop


def estimate(**body):
    body.setdefault("model", "claude-sonnet-4")
    return count.estimate(parse_messages_request(body, counting=True).request)


def test_about_four_characters_a_token():
    assert estimate(messages=[{"role": "user", "content": "x" * 400}]) == 100 + count.MESSAGE_TOKENS
    assert estimate(system="s" * 40, messages=[{"role": "user", "content": "x" * 400}]) == 114


def test_images_tools_and_tool_blocks_count():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    plain = estimate(messages=[{"role": "user", "content": "hi"}])
    with_image = estimate(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}])
    assert with_image - plain == count.IMAGE_TOKENS
    with_tools = estimate(messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert with_tools - plain >= count.TOOL_SYSTEM_TOKENS + 10
    loop = estimate(messages=tool_loop(), tools=[WEATHER])
    assert loop > with_tools + count.IMAGE_TOKENS  # the result's image and the call's input


def test_the_door_validates_like_messages_and_answers_anthropic_shape():
    door = MessagesDoor()
    assert door.count_tokens({"model": "sonnet", "messages": [{"role": "user", "content": "x" * 40}]}) == {
        "input_tokens": 14}
    with pytest.raises(APIError) as e:
        door.count_tokens({"model": "sonnet", "messages": []})
    assert e.value.status == 400
    with pytest.raises(APIError) as e:
        door.count_tokens({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})
    assert e.value.status == 404


def test_model_list_shape():
    listing = models.model_list()
    ids = [m["id"] for m in listing["data"]]
    assert ids == ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"]
    assert listing["has_more"] is False
    assert (listing["first_id"], listing["last_id"]) == ("claude-opus-4", "claude-haiku-4")
    assert listing["data"][1] == {"type": "model", "id": "claude-sonnet-4",
                                  "display_name": "Claude Sonnet 4 (newest)",
                                  "created_at": "2025-05-22T00:00:00Z", "lifecycle": "active"}


def test_one_model():
    assert models.model("anthropic/claude-opus-4")["id"] == "claude-opus-4"
    assert models.model("claude-opus-4-1-20250805")["display_name"] == "claude-opus-4-1-20250805"
    with pytest.raises(APIError) as e:
        models.model("gpt-4o")
    assert e.value.status == 404
