import os
import plistlib
import shlex
import stat
import sys

import pytest

from claude_proxy import service_units
from claude_proxy.cli_probe import CLIMissing
from claude_proxy.service_units import daemon_options, main, systemd_quote

UID = 501
OPTIONS = ["--listen", "tcp:4000:interface=127.0.0.1", "--listen", "unix:/tmp/p.sock",
           "--cli-env", "A=B", "--max-concurrent", "2"]


class Recorder:
    """A runner that records argv and answers from a table of (code, stderr) by argv prefix."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def __call__(self, argv):
        self.calls.append(argv)
        for prefix, answer in self.answers.items():
            if tuple(argv[:len(prefix)]) == prefix:
                return answer
        return 0, ""


@pytest.fixture
def env(tmp_path):
    """Everything main() would otherwise take from the machine."""
    claude = tmp_path / "bin" / "claude"
    twistd = tmp_path / "venv" / "bin" / "twistd"
    home = tmp_path / "home"
    home.mkdir()
    found = []

    def find(option, environ):
        found.append((option, dict(environ)))
        return str(claude)

    class Env:
        pass

    e = Env()
    e.claude, e.twistd, e.home, e.found = claude, twistd, home, found
    e.environ = {"PATH": "/usr/bin", "HOME": str(home)}
    e.runner = Recorder()

    def call(*argv, run=None, find=find, environ=None):
        return main(list(argv), run=run or e.runner, home=home, uid=UID, find=find,
                    environ=e.environ if environ is None else environ, twistd=str(twistd))

    e.main = call
    return e


def files_under(path):
    return sorted(p for p in path.rglob("*") if p.is_file())


def plist_of(env, capsys, *options):
    assert env.main("launchd", "print", "--", *options) == 0
    return plistlib.loads(capsys.readouterr().out.encode())


def unit_of(env, capsys, *options):
    assert env.main("systemd", "print", "--", *options) == 0
    return capsys.readouterr().out


def unit_value(unit, key):
    [line] = [line for line in unit.splitlines() if line.startswith(key + "=")]
    return line[len(key) + 1:]


# ---- launchd

def test_plist_has_every_key(env, capsys):
    plist = plist_of(env, capsys, *OPTIONS)
    log = str(env.home / "Library" / "Logs" / "claude-proxy.log")
    assert plist["Label"] == "dev.claude-proxy"
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ProcessType"] == "Background"
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == log
    assert plist["WorkingDirectory"] == str(env.home)
    assert set(plist["EnvironmentVariables"]) == {"PATH"}
    # The default --shutdown-grace (30) plus the margin.
    assert plist["ExitTimeOut"] == 45


def test_program_arguments_run_twistd_and_parse_back(env, capsys):
    args = plist_of(env, capsys, *OPTIONS)["ProgramArguments"]
    assert args[:4] == [str(env.twistd), "-n", "--pidfile=", "claudeproxy"]
    assert os.path.isabs(args[0])
    options = daemon_options(args[4:])
    assert options["listen"] == ["tcp:4000:interface=127.0.0.1", "unix:/tmp/p.sock"]
    assert options["cli-env"] == [("A", "B")]
    assert options["max-concurrent"] == 2


def test_path_starts_with_claude_then_twistd(env, capsys):
    path = plist_of(env, capsys)["EnvironmentVariables"]["PATH"].split(":")
    assert path == [str(env.claude.parent), str(env.twistd.parent), *service_units.STANDARD_PATH]


def test_path_drops_duplicates_keeping_order():
    assert service_units.search_path("/opt/homebrew/bin", "/opt/homebrew/bin").split(":") == [
        "/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]


def test_claude_is_looked_up_as_the_daemon_would(env, capsys):
    plist_of(env, capsys, "--claude", "/x/claude", "--cli-env", "PATH=/nodes/bin")
    [(option, environ)] = env.found
    assert option == "/x/claude"
    assert environ["PATH"] == "/nodes/bin"


def test_missing_claude_exits_1_with_its_message(env, capsys):
    def find(option, environ):
        raise CLIMissing("The Claude Code CLI was not found ('claude' on PATH).")

    assert env.main("launchd", "install", find=find) == 1
    assert "The Claude Code CLI was not found" in capsys.readouterr().err
    assert files_under(env.home) == []
    assert env.runner.calls == []


def test_launchd_install_writes_and_loads(env, capsys):
    env.runner.answers[("launchctl", "bootout")] = (3, "Boot-out failed: 3: No such process")
    assert env.main("launchd", "install", "--", *OPTIONS) == 0
    plist = env.home / "Library" / "LaunchAgents" / "dev.claude-proxy.plist"
    assert env.runner.calls == [
        ["launchctl", "bootout", f"gui/{UID}/dev.claude-proxy"],
        ["launchctl", "bootstrap", f"gui/{UID}", str(plist)],
    ]
    assert files_under(env.home) == [plist]
    assert stat.S_IMODE(plist.stat().st_mode) == 0o644
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"][4:] == OPTIONS
    assert (env.home / "Library" / "Logs").is_dir()


def test_launchd_bootstrap_failure_exits_1(env, capsys):
    env.runner.answers[("launchctl", "bootstrap")] = (5, "Bootstrap failed: 5: Input/output error")
    assert env.main("launchd", "install") == 1
    err = capsys.readouterr().err
    assert "Bootstrap failed: 5: Input/output error" in err
    assert "not loaded" in err


def test_launchd_uninstall_unloads_and_removes(env, capsys):
    assert env.main("launchd", "install") == 0
    env.runner.calls.clear()
    assert env.main("launchd", "uninstall") == 0
    assert env.runner.calls == [["launchctl", "bootout", f"gui/{UID}/dev.claude-proxy"]]
    assert files_under(env.home) == []


def test_launchd_uninstall_when_not_installed_succeeds(env, capsys):
    env.runner.answers[("launchctl", "bootout")] = (113, "Could not find service")
    assert env.main("launchd", "uninstall") == 0
    assert "Not installed" in capsys.readouterr().out
    assert env.runner.calls == [["launchctl", "bootout", f"gui/{UID}/dev.claude-proxy"]]


def test_uninstall_needs_no_claude(env, capsys):
    def find(option, environ):
        raise AssertionError("uninstall looked for claude")

    assert env.main("systemd", "uninstall", find=find) == 0


# ---- systemd

def test_unit_exec_start_round_trips_through_shlex(env, capsys):
    unit = unit_of(env, capsys, *OPTIONS)
    assert shlex.split(unit_value(unit, "ExecStart")) == [
        str(env.twistd), "-n", "--pidfile=", "claudeproxy", *OPTIONS]


def test_unit_sections(env, capsys):
    unit = unit_of(env, capsys)
    for line in ("[Unit]", "After=network-online.target", "[Service]", "Type=simple",
                 "Restart=on-failure", "RestartSec=5", "KillSignal=SIGTERM", "KillMode=mixed",
                 "ExecReload=/bin/kill -HUP $MAINPID",
                 "[Install]", "WantedBy=default.target",
                 "Description=claude-proxy (OpenAI-compatible API over the Claude Code CLI)"):
        assert line in unit.splitlines()
    path = f"{env.claude.parent}:{env.twistd.parent}:" + ":".join(service_units.STANDARD_PATH)
    assert unit_value(unit, "Environment") == f'"PATH={path}"'
    assert unit_value(unit, "TimeoutStopSec") == "45"


def test_systemd_quoting_of_space_percent_quote_backslash_dollar():
    assert systemd_quote('a b%c"d\\e$f') == '"a b%%c\\"d\\\\e$$f"'
    assert systemd_quote("$HOME", dollars=False) == '"$HOME"'
    assert systemd_quote("a\nb") == '"a\\x0ab"'


def test_unit_quotes_an_awkward_argument(env, capsys):
    unit = unit_of(env, capsys, "--cli-env", 'X=50% "off"')
    assert unit_value(unit, "ExecStart").endswith(' "--cli-env" "X=50%% \\"off\\""')


def test_stop_timeout_follows_shutdown_grace():
    assert service_units.stop_timeout({}) == 45
    assert service_units.stop_timeout({"shutdown-grace": 60.0}) == 75
    assert service_units.stop_timeout({"shutdown-grace": "2.5"}) == 18


def test_systemd_install_writes_and_starts(env, capsys, tmp_path):
    env.environ["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    assert env.main("systemd", "install", "--", "--max-concurrent", "2") == 0
    unit = tmp_path / "xdg" / "systemd" / "user" / "claude-proxy.service"
    assert env.runner.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "claude-proxy.service"],
        ["systemctl", "--user", "restart", "claude-proxy.service"],
    ]
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert '"--max-concurrent" "2"' in unit.read_text()
    assert files_under(env.home) == []


def test_systemd_unit_defaults_to_home_config(env, capsys):
    env.environ["XDG_CONFIG_HOME"] = "relative/ignored"
    assert env.main("systemd", "install") == 0
    assert files_under(env.home) == [
        env.home / ".config" / "systemd" / "user" / "claude-proxy.service"]


def test_systemd_enable_failure_exits_1(env, capsys):
    env.runner.answers[("systemctl", "--user", "enable")] = (1, "Failed to connect to bus")
    assert env.main("systemd", "install") == 1
    assert "Failed to connect to bus" in capsys.readouterr().err
    assert env.runner.calls[-1][:3] == ["systemctl", "--user", "enable"]


def test_systemd_uninstall_disables_removes_reloads(env, capsys):
    assert env.main("systemd", "install") == 0
    unit = env.home / ".config" / "systemd" / "user" / "claude-proxy.service"
    env.runner.calls.clear()
    env.runner.answers[("systemctl", "--user", "disable")] = (1, "not loaded")

    def reload_sees_no_file(argv):
        assert argv != ["systemctl", "--user", "daemon-reload"] or not unit.exists()
        return env.runner(argv)

    assert env.main("systemd", "uninstall", run=reload_sees_no_file) == 0
    assert env.runner.calls == [
        ["systemctl", "--user", "disable", "--now", "claude-proxy.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert not unit.exists()


# ---- the command line

@pytest.mark.parametrize("options", [["--max-concurrent", "0"], ["--no-such-option"],
                                     ["--cli-env", "not-a-pair"], ["stray"], ["--help"]])
def test_invalid_daemon_option_exits_2_and_writes_nothing(env, capsys, options):
    assert env.main("launchd", "install", "--", *options) == 2
    out, err = capsys.readouterr()
    assert "claudeproxy options:" in err
    assert out == ""
    assert files_under(env.home) == []
    assert env.runner.calls == [] and env.found == []


@pytest.mark.parametrize("argv", [[], ["launchd"], ["upstart", "install"],
                                  ["systemd", "start"], ["systemd", "install", "--listen", "x"],
                                  ["systemd", "uninstall", "--", "--listen", "x"]])
def test_bad_command_lines_exit_2(env, capsys, argv):
    assert env.main(*argv) == 2
    assert "usage: claude-proxy-service" in capsys.readouterr().err
    assert env.runner.calls == []


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_print_writes_nothing_to_disk(env, capsys, manager):
    assert env.main(manager, "print", "--", *OPTIONS) == 0
    assert "claudeproxy" in capsys.readouterr().out
    assert files_under(env.home) == []
    assert env.runner.calls == []


def test_find_twistd_prefers_this_pythons(tmp_path):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python").touch()
    assert service_units.find_twistd(str(bin_ / "python"), lambda name: "/usr/bin/twistd") == \
        "/usr/bin/twistd"
    (bin_ / "twistd").touch(mode=0o755)
    assert service_units.find_twistd(str(bin_ / "python"), lambda name: "/usr/bin/twistd") == \
        str(bin_ / "twistd")
    assert service_units.find_twistd(str(tmp_path / "none" / "python"), lambda name: None) is None


def test_default_runner_reports_status_and_stderr(tmp_path):
    code, err = service_units.run_command(
        [sys.executable, "-c", "import sys; sys.stderr.write('no such service'); sys.exit(3)"])
    assert (code, err) == (3, "no such service")
    code, err = service_units.run_command([str(tmp_path / "missing")])
    assert code == 127 and "missing" in err


def test_shutdown_grace_reaches_timeout_stop_sec(env, capsys):
    if "shutdown-grace" not in service_units.tap.Options():
        pytest.skip("tap.Options has no --shutdown-grace yet")
    unit = unit_of(env, capsys, "--shutdown-grace", "60")
    assert unit_value(unit, "TimeoutStopSec") == "75"


def test_accounts_and_the_overage_guard_reach_the_service(env, capsys, tmp_path):
    work = tmp_path / "claude-work"
    work.mkdir()
    unit = unit_of(env, capsys, "--account", f"work={work}", "--overage", "allow")
    assert f'"--account" "work={work}" "--overage" "allow"' in unit_value(unit, "ExecStart")
    assert env.main("systemd", "print", "--", "--account", f"gone={tmp_path / 'no'}") == 2
