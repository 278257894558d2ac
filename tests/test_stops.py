import random

import pytest

from claude_proxy.errors import APIError
from claude_proxy.stops import StopMatcher, parse_stop


def run(stops, deltas):
    """Feed every delta, then flush; the (emitted, matched) of each step."""
    matcher = StopMatcher(tuple(stops))
    steps = [matcher.feed(d) for d in deltas]
    return steps, matcher.flush(), matcher.matched


def whole(stops, deltas):
    steps, tail, matched = run(stops, deltas)
    return "".join(text for text, _ in steps) + tail, matched


def reference(stops, text):
    """Cutting the whole text at once: what streaming must agree with."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def test_no_stops_passes_text_through_without_buffering():
    matcher = StopMatcher(())
    assert matcher.feed("Hello E") == ("Hello E", False)
    assert matcher.feed("") == ("", False)
    assert matcher.flush() == ""
    assert not matcher.matched


def test_single_stop_in_one_delta():
    matcher = StopMatcher(("END",))
    assert matcher.feed("Hello END world") == ("Hello ", True)
    assert matcher.matched


def test_nothing_after_a_match():
    matcher = StopMatcher(("END",))
    matcher.feed("aENDb")
    assert matcher.feed("more text") == ("", True)
    assert matcher.feed("END") == ("", True)
    assert matcher.flush() == ""


def test_any_of_several_stops():
    assert run(("\n\n", "STOP"), ["abc STOP def\n\nx"])[0] == [("abc ", True)]
    assert run(("\n\n", "STOP"), ["abc\n\ndef STOP"])[0] == [("abc", True)]


def test_stop_split_across_two_deltas():
    steps, tail, matched = run(("END",), ["Hello E", "ND world"])
    assert steps == [("Hello ", False), ("", True)]
    assert (tail, matched) == ("", True)


def test_stop_split_across_three_deltas():
    steps, _, _ = run(("END",), ["xx E", "N", "D yy"])
    assert steps == [("xx ", False), ("", False), ("", True)]


def test_stop_split_one_character_per_delta():
    steps, tail, matched = run(("<|end|>",), list("ab<|end|>cd"))
    assert "".join(t for t, _ in steps) + tail == "ab"
    assert matched


def test_holds_back_only_the_longest_partial_stop():
    matcher = StopMatcher(("xyz", "ab"))
    assert matcher.feed("123a") == ("123", False)
    assert matcher.feed("c") == ("ac", False)
    assert matcher.feed("12xy") == ("12", False)


def test_holds_back_a_self_overlapping_partial_correctly():
    # "aa" might be the start of "aab"; then "aaab" has it one later.
    steps, _, _ = run(("aab",), ["aa", "ab"])
    assert steps == [("", False), ("a", True)]


def test_a_false_prefix_is_emitted_once_it_fails():
    steps, tail, matched = run(("END",), ["The E", "ASY way"])
    assert steps == [("The ", False), ("EASY way", False)]
    assert (tail, matched) == ("", False)


def test_flush_gives_back_a_partial_stop_at_the_end():
    matcher = StopMatcher(("END",))
    assert matcher.feed("The EN") == ("The ", False)
    assert matcher.flush() == "EN"
    assert not matcher.matched


def test_earliest_start_wins_between_overlapping_stops():
    # "BC" completes first, but "ABCD" starts earlier, as a one-shot cut finds.
    for stops in (("BC", "ABCD"), ("ABCD", "BC")):
        assert run(stops, ["xABCDy"])[0] == [("x", True)]
        steps, _, _ = run(stops, ["xAB", "C", "D"])
        assert steps == [("x", False), ("", False), ("", True)]


def test_a_match_waits_only_while_an_earlier_stop_could_complete():
    matcher = StopMatcher(("ABCD", "BC"))
    assert matcher.feed("xABC") == ("x", False)
    assert matcher.feed("z") == ("A", True)


def test_a_waiting_match_is_settled_by_flush():
    matcher = StopMatcher(("ABCD", "BC"))
    assert matcher.feed("xABC") == ("x", False)
    assert matcher.flush() == "A"
    assert matcher.matched


def test_unicode_stops_split_across_deltas():
    assert whole(("終わり",), ["答えは42。終", "わ", "り。以上"]) == ("答えは42。", True)
    assert whole(("🛑",), ["go go ", "🛑 stop"]) == ("go go ", True)
    assert whole(("é!",), ["café", " café!"]) == ("café caf", True)


def test_any_split_gives_the_one_shot_cut():
    rng = random.Random(1234)
    for _ in range(500):
        stops = tuple(
            "".join(rng.choice("ab") for _ in range(rng.randint(1, 4)))
            for _ in range(rng.randint(1, 4))
        )
        text = "".join(rng.choice("abc") for _ in range(rng.randint(0, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        deltas = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        assert whole(stops, deltas) == reference(stops, text), (stops, deltas)


def test_long_stream_of_small_deltas():
    deltas = ["word "] * 20_000 + ["the end", " is here"]
    assert whole(("end is", "\n\n"), deltas) == ("word " * 20_000 + "the ", True)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ()),
        ("END", ("END",)),
        (["a", "b\n"], ("a", "b\n")),
        (["1", "2", "3", "4"], ("1", "2", "3", "4")),
        ([], ()),
    ],
)
def test_parse_stop(value, expected):
    assert parse_stop(value) == expected


@pytest.mark.parametrize(
    "value", ["", ["a", ""], ["a", 1], [None], ["1", "2", "3", "4", "5"], 42, {"a": 1}, True],
)
def test_parse_stop_rejects(value):
    with pytest.raises(APIError) as caught:
        parse_stop(value)
    assert (caught.value.status, caught.value.param) == (400, "stop")
