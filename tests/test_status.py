"""The status page's snapshot of accounts: windows in order, with their resets; skips."""

from claude_proxy.accounts import Account, Accounts
from claude_proxy.cli_probe import Health
from claude_proxy.events import RateLimit, Window
from claude_proxy.status.snapshot import accounts_json

REPORT = RateLimit("allowed_warning", 2000, "five_hour", overage_status="allowed",
                   using_overage=True,
                   windows=(Window("seven_day", 0.5, 9000, "allowed"),
                            Window("five_hour", 0.91, 2000, "allowed_warning")))


def test_accounts_with_their_quota_and_skips():
    accounts = Accounts((Account("a", "/a"), Account("b", "/b")), refuse_overage=True)
    accounts.observed(accounts.accounts[0], REPORT, 1000.0)  # extra usage: skipped till 2000
    logins = {"a": Health(True, "/bin/claude", "2.1.330", login={"logged_in": True}),
              "b": Health(False, "/bin/claude", "2.1.330", login={"logged_in": False})}
    a, b = accounts_json(accounts, logins, 1500.0)
    assert (a["name"], a["status"], a["skipped"]) == ("a", "ok",
                                                       {"why": "extra_usage", "until": 2000.0})
    assert [(w["label"], w["utilization"], w["resets_at"]) for w in a["quota"]["windows"]] == \
        [("5-hour", 0.91, 2000), ("Weekly", 0.5, 9000)]
    assert a["quota"]["extra_usage"] == {"status": "allowed", "in_use": True,
                                         "disabled_reason": None}
    assert a["quota"]["seen_at"] == 1000.0
    assert (b["status"], b["quota"], b["skipped"]) == ("not_logged_in", None, None)
    # Past the reset the skip is gone.
    assert accounts_json(accounts, logins, 2000.0)[0]["skipped"] is None
