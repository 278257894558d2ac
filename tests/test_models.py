import pytest

from claude_proxy.errors import APIError
from claude_proxy.models import CREATED, model_list, resolve


@pytest.mark.parametrize("asked, shown, cli", [
    ("claude-opus-4", "claude-opus-4", "opus"),
    ("claude-sonnet-4", "claude-sonnet-4", "sonnet"),
    ("claude-haiku-4", "claude-haiku-4", "haiku"),
    ("sonnet", "sonnet", "sonnet"),
    ("openai/claude-opus-4", "claude-opus-4", "opus"),
    ("anthropic/claude-haiku-4", "claude-haiku-4", "haiku"),
    ("claude-max/claude-sonnet-4", "claude-sonnet-4", "sonnet"),
    ("claude-code-cli/opus", "opus", "opus"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1-20250805", "claude-opus-4-1-20250805"),
    ("openai/claude-sonnet-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5"),
])
def test_resolve_known(asked, shown, cli):
    choice = resolve(asked)
    assert (choice.id, choice.cli_model) == (shown, cli)


@pytest.mark.parametrize("asked", [
    "gpt-4o", "", None, 42, "claude-", "openai/gpt-4", "claude-opus-4 --bare",
    "--model", "CLAUDE-OPUS-4", "claude-opus-4/../x", "other/claude-opus-4",
])
def test_unknown_models_are_404_never_substituted(asked):
    with pytest.raises(APIError) as caught:
        resolve(asked)
    assert caught.value.status == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"


def test_model_list_is_stable_openai_shape():
    listing = model_list()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"]
    assert all(m["created"] == CREATED and m["object"] == "model" for m in listing["data"])
    assert model_list() == listing
