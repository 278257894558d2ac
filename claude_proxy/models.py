"""
Which model ids clients may ask for, and what the CLI is told to run.
"""

from __future__ import annotations

import re

from attrs import define, field, frozen

from claude_proxy.errors import model_not_found

# Family ids map to the CLI's aliases so they follow the newest model of the family.
FAMILIES = {
    "claude-opus-4": "opus",
    "claude-sonnet-4": "sonnet",
    "claude-haiku-4": "haiku",
}
ALIASES = frozenset(FAMILIES.values())
PREFIXES = ("openai/", "anthropic/", "claude-max/", "claude-code-cli/")

# A stable "created" for the listing: Claude 4's release day (2025-05-22 UTC).
CREATED = 1747872000

# Full ids go to the CLI's argv as they are, so they are held to the shape of real ones.
_FULL_ID = re.compile(r"claude-[a-z0-9][a-z0-9.\-]{0,98}")


@frozen
class ModelChoice:
    """
    A model the client asked for (`id`, without any provider prefix) and the
    value for the CLI's --model.
    """

    id: str
    cli_model: str


def resolve(requested: object) -> ModelChoice:
    """
    Resolve a client's model id, or raise a 404 model_not_found; never substitute.
    """
    if not isinstance(requested, str) or not requested:
        raise model_not_found(str(requested))
    bare = requested
    for prefix in PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
            break
    if bare in FAMILIES:
        return ModelChoice(bare, FAMILIES[bare])
    if bare in ALIASES:
        return ModelChoice(bare, bare)
    if _FULL_ID.fullmatch(bare):
        return ModelChoice(bare, bare)
    raise model_not_found(requested)


@define
class Aliases:
    """
    The full id the CLI runs for each alias, as its initialize answers say
    (CLI 2.1.330: `sonnet` → claude-sonnet-5-5); the same CLI for the daemon's life.
    """

    _resolved: dict[str, str] = field(factory=dict)

    def learn(self, pairs: tuple[tuple[str, str], ...]) -> None:
        for alias, full in pairs:
            if alias in ALIASES and _FULL_ID.fullmatch(full):
                self._resolved[alias] = full

    def get(self, alias: str, default: str | None = None) -> str | None:
        return self._resolved.get(alias, default)


def model_object(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "anthropic"}


def model_list() -> dict:
    return {"object": "list", "data": [model_object(m) for m in FAMILIES]}
