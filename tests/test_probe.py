"""The CLI probe behind /health: cached, one probe at a time, killed on timeout."""

from claude_proxy.cli import VERSION_TIMEOUT, CLIProbe

from tests.fakes import FakeProcessReactor

AUTH = b'{"loggedIn": true, "authMethod": "claude.ai", "subscriptionType": "max"}'


def answers(d):
    out = []
    d.addBoth(out.append)
    return out


def test_many_callers_share_one_probe_and_its_cache():
    reactor = FakeProcessReactor()
    probe = CLIProbe(reactor, "/bin/claude", {})
    waiting = [answers(probe.check()) for _ in range(20)]
    [version] = reactor.spawned  # one --version, not twenty
    assert version.args == ["/bin/claude", "--version"]
    version.protocol.outReceived(b"2.1.330 (Claude Code)\n")
    version.exit(0)
    [_, auth] = reactor.spawned
    assert auth.args == ["/bin/claude", "auth", "status", "--json"]
    auth.protocol.outReceived(AUTH)
    auth.exit(0)
    healths = [w[0] for w in waiting]
    assert all(h.ok and h.version == "2.1.330" for h in healths)
    assert healths[0].login == {"logged_in": True, "method": "claude.ai", "subscription": "max"}
    assert answers(probe.check())[0] is healths[0]  # cached
    assert len(reactor.spawned) == 2


def test_a_hung_probe_is_killed_at_the_timeout():
    reactor = FakeProcessReactor()
    probe = CLIProbe(reactor, "/bin/claude", {})
    waiting = answers(probe.check())
    [version] = reactor.spawned
    reactor.advance(VERSION_TIMEOUT)
    assert version.signals == ["KILL"]
    version.exit(signal=9)
    assert waiting[0].ok is False and "--version" in waiting[0].error
    assert reactor.getDelayedCalls() == []
