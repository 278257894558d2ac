"""
`GET /v1/models` and `/v1/models/{id}` in Anthropic's shape, for clients that
send `anthropic-version`: the same models the OpenAI listing serves. Pure.
"""

from __future__ import annotations

from datetime import datetime, timezone

from claude_proxy.models import CREATED, FAMILIES, resolve

CREATED_AT = datetime.fromtimestamp(CREATED, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
DISPLAY_NAMES = {
    "claude-opus-4": "Claude Opus 4 (newest)",
    "claude-sonnet-4": "Claude Sonnet 4 (newest)",
    "claude-haiku-4": "Claude Haiku 4 (newest)",
    "opus": "Claude Opus (newest)",
    "sonnet": "Claude Sonnet (newest)",
    "haiku": "Claude Haiku (newest)",
}


def model_info(model_id: str) -> dict:
    return {"type": "model", "id": model_id, "display_name": DISPLAY_NAMES.get(model_id, model_id),
            "created_at": CREATED_AT, "lifecycle": "active"}


def model_list() -> dict:
    data = [model_info(m) for m in FAMILIES]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def model(model_id: str) -> dict:
    """One model; an id the proxy would not serve is a 404 (not_found_error)."""
    return model_info(resolve(model_id).id)
