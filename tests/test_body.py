"""The JSON body every door reads first."""

import pytest

from claude_proxy.body import parse_body
from claude_proxy.errors import APIError


def refused(body):
    with pytest.raises(APIError) as caught:
        parse_body(body)
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize("body", [b"{", b"[]", b"\xff", b"", b"[" * 5000 + b"]" * 5000])
def test_malformed_json(body):
    assert refused(body).code == "invalid_json"


def test_deep_but_parseable_nesting_is_accepted():
    nested, depth = parse_body(b'{"a":' + b"[" * 900 + b"]" * 900 + b"}")["a"], 0
    while nested:
        nested, depth = nested[0], depth + 1
    assert depth == 899


@pytest.mark.parametrize("body, where", [
    (b'{"messages":[{"role":"system","content":"\\ud800"}]}', "messages[0].content"),
    (b'{"a":{"\\udfff":1}}', "a.\udfff"),
    (b'{"x":["ok","\\udc00 tail"]}', "x[1]"),
])
def test_lone_surrogates_are_refused_naming_the_field(body, where):
    error = refused(body)
    assert (error.code, error.param) == ("invalid_text", where)


def test_paired_surrogates_are_text():
    assert parse_body(b'{"e":"\\ud83d\\ude00"}') == {"e": "\U0001F600"}
