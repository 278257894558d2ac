"""
A request body as JSON: an object, with text that can be written as UTF-8.
What every wire API's door reads first. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from claude_proxy.errors import bad_request

_decode = json.JSONDecoder().decode


def parse_body(body: bytes) -> dict:
    """
    The body as a JSON object, or a 400 `invalid_json`. JSON may escape a lone
    surrogate ("\\ud800"), which no UTF-8 file, pipe or API request can hold:
    that is a 400 naming where it is, before any work starts.
    """
    try:
        parsed = _decode(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json")
    except RecursionError:
        raise bad_request("The request body nests too deeply.", code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    try:
        # One pass in C; the walk below runs only to name the place.
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise bad_request("The request body nests too deeply.", code="invalid_json") from None
    except UnicodeEncodeError:
        try:
            where = _surrogate_at(parsed, "")
        except RecursionError:
            where = None
        raise bad_request(f"{where or 'The body'} holds a lone surrogate (\\ud800-\\udfff), "
                          "which is not text.", where or None, "invalid_text") from None
    return parsed


def _surrogate_at(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items = [(k, f"{where}.{k}" if where else k, v) for k, v in value.items()]
        for key, at, item in items:
            found = _surrogate_at(key, at) or _surrogate_at(item, at)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_at(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None
