import re

from twisted.internet.task import Clock

from claude_proxy.app import ProxyAPI
from claude_proxy.dispatch import Dispatch
from claude_proxy.plan import CLISettings
from claude_proxy.runner import Runner
from claude_proxy.tap import Options, beyond_loopback, interface_of


def test_what_counts_as_beyond_loopback():
    assert not beyond_loopback("tcp:3456:interface=127.0.0.1")
    assert not beyond_loopback("tcp6:3456:interface=\\:\\:1")
    assert not beyond_loopback("tcp:3456:interface=localhost")
    assert not beyond_loopback("unix:/run/user/1000/claude-proxy.sock")
    assert beyond_loopback("tcp:3456")
    assert beyond_loopback("tcp:3456:interface=0.0.0.0")
    assert beyond_loopback("tcp:3456:interface=192.168.1.5")
    assert interface_of("tcp6:3456:interface=\\:\\:1") == "::1"


def test_help_names_every_endpoint():
    help_text = " ".join(str(Options()).split())  # as one line: usage wraps the text
    api = ProxyAPI(Dispatch(Runner(Clock()), CLISettings("claude"), {}, Clock()), None, None)
    routes = {re.sub(r"<[^>]*>", "ID", route.rule) for route in api.labels.routes}
    assert routes and {r for r in routes if r not in help_text} == set()
