"""The CLI probe behind /health: cached, one probe at a time, killed on timeout."""

from claude_proxy.cli_probe import VERSION_TIMEOUT, CLIProbe

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


def probe_with(auth_output: bytes):
    reactor = FakeProcessReactor()
    waiting = answers(CLIProbe(reactor, "/bin/claude", {}).check())
    [version] = reactor.spawned
    version.protocol.outReceived(b"2.1.330 (Claude Code)\n")
    version.exit(0)
    auth = reactor.spawned[1]
    auth.protocol.outReceived(auth_output)
    auth.exit(0 if b"true" in auth_output else 1)
    return waiting[0]


def test_a_cli_that_is_not_logged_in_is_not_healthy():
    health = probe_with(b'{"loggedIn": false, "authMethod": "none", "apiProvider": "firstParty"}')
    assert (health.ok, health.status, health.version) == (False, "not_logged_in", "2.1.330")
    assert "/login" in health.error


def test_a_logged_in_cli_is_ok_and_an_unknown_login_is_not_held_against_it():
    assert probe_with(AUTH).status == "ok"
    assert probe_with(b"error: unknown command 'auth'").status == "ok"


def test_a_cli_that_does_not_run_is_unavailable():
    reactor = FakeProcessReactor()
    waiting = answers(CLIProbe(reactor, "/bin/claude", {}).check())
    reactor.spawned[0].exit(127)
    assert (waiting[0].ok, waiting[0].status) == (False, "unavailable")


def test_a_cli_that_cannot_be_started_answers_at_once():
    reactor = FakeProcessReactor()
    reactor.fail_spawn = FileNotFoundError(2, "No such file or directory")
    probe = CLIProbe(reactor, "/gone/claude", {})
    [health] = answers(probe.check())
    assert (health.ok, health.status) == (False, "unavailable")
    assert "No such file" in health.error
