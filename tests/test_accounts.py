"""Accounts: routing that sticks and spreads, skipping, failover, the extra-usage guard."""

import pytest

from claude_proxy.accounts import PROXY_ACCOUNT_HEADER, Account, Accounts, conversation_key
from claude_proxy.errors import APIError
from claude_proxy.events import RateLimit, Window
from claude_proxy.openai_chat.parse import parse_chat_request

A, B, C = Account("a", "/a"), Account("b", "/b"), Account("c", "/c")
NOW = 1_000_000.0
USAGE_LIMIT = APIError(429, "limit", "rate_limit_error", "usage_limit_reached", retry_after=3600)
RATE_LIMIT = APIError(429, "slow", "rate_limit_error", "rate_limit_exceeded", retry_after=20)
NOT_LOGGED_IN = APIError(503, "login", "server_error", "cli_not_logged_in")
THIRD_PARTY = APIError(403, "3p", "permission_error", "extra_usage_required")


def report(status="allowed", overage=False, resets=NOW + 3600, overage_status="rejected"):
    return RateLimit(status, int(resets), "five_hour", overage_status, "", overage,
                     (Window("five_hour", 0.86, int(resets), status),
                      Window("seven_day", 0.31, int(resets + 86400), "allowed")))


def test_a_conversation_sticks_to_one_account_and_conversations_spread():
    accounts = Accounts((A, B, C))
    firsts = [accounts.route(f"conversation {i}", NOW)[0] for i in range(60)]
    assert firsts == [accounts.route(f"conversation {i}", NOW)[0] for i in range(60)]
    assert {a.name for a in firsts} == {"a", "b", "c"}
    assert sorted(accounts.route("x", NOW), key=lambda a: a.name) == [A, B, C]


def test_the_key_is_the_opening_of_the_conversation():
    first = parse_chat_request({"model": "opus", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]})
    later = parse_chat_request({"model": "sonnet", "messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]})
    assert conversation_key(first, "k1") == conversation_key(later, "k1")
    assert conversation_key(first, "k1") != conversation_key(first, "k2")


def test_a_refusing_account_is_skipped_until_its_reset_and_the_next_takes_over():
    accounts = Accounts((A, B))
    order = accounts.route("c", NOW)
    assert accounts.rejected(order[0], USAGE_LIMIT, NOW)
    assert accounts.route("c", NOW) == order[1:]
    assert accounts.route("c", NOW + 3599) == order[1:]
    assert accounts.route("c", NOW + 3600) == order  # reset: back, and the conversation with it
    assert accounts.standing(order[0]).failed_over == 1


@pytest.mark.parametrize("error, why", [
    (RATE_LIMIT, "rate_limit"), (NOT_LOGGED_IN, "not_logged_in"), (THIRD_PARTY, "extra_usage")])
def test_each_refusal_of_an_account_fails_over(error, why):
    accounts = Accounts((A, B))
    assert accounts.rejected(A, error, NOW)
    assert accounts.standing(A).why == why and accounts.route("c", NOW) == [B]


def test_other_failures_are_not_the_accounts():
    accounts = Accounts((A, B))
    for error in (APIError(502, "x", "server_error", "cli_error"),
                  APIError(400, "bad", code="invalid_json")):
        assert not accounts.rejected(A, error, NOW)
    assert len(accounts.route("c", NOW)) == 2


def test_one_account_keeps_refusals_without_a_reset_to_itself():
    accounts = Accounts()
    for error in (RATE_LIMIT, NOT_LOGGED_IN, THIRD_PARTY):
        assert not accounts.rejected(accounts.accounts[0], error, NOW)
    assert accounts.route("c", NOW) == list(accounts.accounts)


def test_when_every_account_is_spent_the_earliest_reset_is_the_answer():
    accounts = Accounts((A, B))
    accounts.rejected(A, USAGE_LIMIT, NOW)
    accounts.rejected(B, APIError(429, "l", "rate_limit_error", "usage_limit_reached",
                                  retry_after=600), NOW)
    assert accounts.route("c", NOW) == []
    error = accounts.refusal(NOW)
    assert (error.status, error.code, error.retry_after) == (429, "usage_limit_reached", 600)


def test_no_account_logged_in_is_a_503():
    accounts = Accounts((A, B))
    for account in (A, B):
        accounts.rejected(account, NOT_LOGGED_IN, NOW)
    assert (accounts.refusal(NOW).status, accounts.refusal(NOW).code) == (503, "cli_not_logged_in")


def test_extra_usage_is_refused_until_the_window_resets():
    accounts = Accounts((A, B))
    accounts.observed(A, report(status="rejected", overage=True, overage_status="allowed"), NOW)
    assert accounts.route("c", NOW) == [B]
    accounts.observed(B, report(status="rejected", overage=True, overage_status="allowed",
                                resets=NOW + 100), NOW)
    error = accounts.refusal(NOW)
    assert (error.status, error.code, error.retry_after) == (429, "extra_usage_refused", 100)
    assert accounts.route("c", NOW + 100) == [B]


def test_extra_usage_allowed_goes_on():
    accounts = Accounts((A,), refuse_overage=False)
    accounts.observed(A, report(status="rejected", overage=True, overage_status="allowed"), NOW)
    assert accounts.route("c", NOW) == [A]


def test_a_spent_window_without_extra_usage_is_skipped_until_it_resets():
    accounts = Accounts((A, B))
    accounts.observed(A, report(status="rejected"), NOW)
    assert accounts.route("c", NOW) == [B]


def test_headers_carry_the_quota_and_the_account():
    accounts = Accounts((A,))
    assert accounts.headers(A) == {PROXY_ACCOUNT_HEADER: "a"}
    accounts.observed(A, report(), NOW)
    headers = accounts.headers(A)
    assert headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert headers["anthropic-ratelimit-unified-5h-utilization"] == "0.86"
    assert headers["anthropic-ratelimit-unified-7d-reset"] == str(int(NOW + 3600 + 86400))
    assert headers["anthropic-ratelimit-unified-representative-claim"] == "five_hour"
    assert headers["anthropic-ratelimit-unified-overage-status"] == "rejected"


def test_usage_json_says_how_old_the_figures_are():
    accounts = Accounts((A, B))
    accounts.observed(A, report(), NOW)
    accounts.answered(A, True)
    [a, b] = accounts.to_json(NOW + 30)["data"]
    assert a["quota"]["age_seconds"] == 30.0
    assert a["quota"]["windows"]["five_hour"]["utilization"] == 0.86
    assert a["quota"]["extra_usage"] == {"status": "rejected", "disabled_reason": None,
                                         "in_use": False}
    assert (a["answered"], a["skipped"], b["quota"]) == (1, None, None)


def test_waiting_for_the_quota_is_learned():
    accounts = Accounts((A,))
    assert accounts.awaits_quota(A)  # unknown: a subscription login reports it
    accounts.answered(A, False)
    assert not accounts.awaits_quota(A)  # an API key never does
    accounts.observed(A, report(), NOW)
    assert accounts.awaits_quota(A)
