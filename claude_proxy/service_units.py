"""
`claude-proxy-service`: install `twistd -n claudeproxy` as a per-user service
under launchd (macOS) or systemd (Linux).

The files are made by pure functions; writing them and running launchctl or
systemctl goes through an injected runner, so the tests never touch either.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.python import usage

from claude_proxy import tap
from claude_proxy.cli_probe import CLIMissing, find_claude

PROG = "claude-proxy-service"
LABEL = "dev.claude-proxy"
UNIT = "claude-proxy.service"
DESCRIPTION = "claude-proxy (OpenAI-compatible API over the Claude Code CLI)"
# Searched after the directories of claude and twistd. launchd gives agents
# only /usr/bin:/bin:/usr/sbin:/sbin, which rarely holds claude (or node).
STANDARD_PATH = ("/usr/local/bin", "/opt/homebrew/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
DEFAULT_SHUTDOWN_GRACE = 30.0
# Time beyond the daemon's own shutdown grace before the manager kills it.
STOP_MARGIN = 15.0

Run = Callable[[list[str]], tuple[int, str]]
Find = Callable[[str | None, Mapping[str, str]], str]


@frozen
class Daemon:
    """
    What the service runs: the command line, its PATH, and how long it may take to stop.
    """

    argv: tuple[str, ...]
    path: str
    stop_timeout: int


@frozen
class Command:
    """
    A service-manager command; a failure of one with `check` false is expected
    (e.g. unloading what is not loaded) and ignored.
    """

    argv: tuple[str, ...]
    check: bool = True


@frozen
class Manager:
    """
    Where one service manager's file goes and the commands that (un)load it.
    """

    file: Path
    dirs: tuple[Path, ...]            # created on install, besides the file's own
    load: tuple[Command, ...]         # after writing the file
    unload: tuple[Command, ...]       # before removing it
    after_remove: tuple[Command, ...]


# ---- the daemon's command line

def daemon_options(args: Sequence[str]) -> tap.Options:
    """
    Parse the daemon's options as `twistd claudeproxy` will, so that a bad one
    fails now rather than in a restart loop. Raises usage.UsageError.
    """
    options = tap.Options()
    # --help and --version print and exit; swallow the print and refuse them.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            options.parseOptions(list(args))
        except SystemExit:
            raise usage.UsageError("--help and --version print and exit; "
                                   "they are not options for a service") from None
    return options


def find_twistd(executable: str = sys.executable,
                which: Callable[[str], str | None] = shutil.which) -> str | None:
    """
    The twistd of this Python's environment (a venv's or pipx's bin), else the one on PATH.
    """
    sibling = Path(executable).parent / "twistd"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return os.path.abspath(sibling)
    found = which("twistd")
    return os.path.abspath(found) if found else None


def search_path(*dirs: str) -> str:
    """
    PATH from the given directories, then the standard ones; duplicates dropped, order kept.
    """
    return ":".join(dict.fromkeys(d for d in (*dirs, *STANDARD_PATH) if d))


def stop_timeout(options: Mapping[str, Any]) -> int:
    """
    Seconds the manager waits after SIGTERM: the daemon's --shutdown-grace plus a margin.
    """
    grace = options.get("shutdown-grace")
    grace = DEFAULT_SHUTDOWN_GRACE if grace is None else float(grace)
    return math.ceil(grace + STOP_MARGIN)


def daemon(twistd: str, claude: str, args: Sequence[str], options: Mapping[str, Any]) -> Daemon:
    """
    `twistd -n --pidfile= claudeproxy ARGS`: in the foreground (the manager
    supervises it) and without a pidfile (nothing else needs one).
    """
    return Daemon(
        argv=(twistd, "-n", "--pidfile=", "claudeproxy", *args),
        path=search_path(os.path.dirname(claude), os.path.dirname(twistd)),
        stop_timeout=stop_timeout(options),
    )


# ---- launchd

def launchd_manager(home: Path, uid: int) -> Manager:
    domain = f"gui/{uid}"
    plist = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    bootout = Command(("launchctl", "bootout", f"{domain}/{LABEL}"), check=False)
    return Manager(
        file=plist,
        dirs=(launchd_log(home).parent,),
        # bootout first: bootstrap refuses a label that is already loaded.
        load=(bootout, Command(("launchctl", "bootstrap", domain, str(plist)))),
        unload=(bootout,),
        after_remove=(),
    )


def launchd_log(home: Path) -> Path:
    return home / "Library" / "Logs" / "claude-proxy.log"


def launchd_plist(d: Daemon, home: Path) -> str:
    log = str(launchd_log(home))
    return plistlib.dumps({
        "Label": LABEL,
        "ProgramArguments": list(d.argv),
        "EnvironmentVariables": {"PATH": d.path},
        "RunAtLoad": True,
        "KeepAlive": True,
        "ProcessType": "Background",
        # launchd's default (historically 20 s) is shorter than the shutdown grace.
        "ExitTimeOut": d.stop_timeout,
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "WorkingDirectory": str(home),
    }).decode("utf-8")


# ---- systemd

def systemd_manager(home: Path, environ: Mapping[str, str]) -> Manager:
    config = environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    base = Path(config) if os.path.isabs(config) else home / ".config"

    def systemctl(*args: str, check: bool = True) -> Command:
        return Command(("systemctl", "--user", *args), check=check)

    return Manager(
        file=base / "systemd" / "user" / UNIT,
        dirs=(),
        # enable + restart rather than `enable --now`: --now does not restart a
        # running service, so a re-install would keep the old options.
        load=(systemctl("daemon-reload"), systemctl("enable", UNIT), systemctl("restart", UNIT)),
        unload=(systemctl("disable", "--now", UNIT, check=False),),
        after_remove=(systemctl("daemon-reload"),),
    )


def systemd_quote(arg: str, *, dollars: bool = True) -> str:
    """
    One word for ExecStart= or Environment=: double-quoted, `"` and `\\` escaped,
    `%` doubled (specifiers), `$` doubled if `dollars` (ExecStart= expands
    variables; Environment= does not), control characters as \\xNN.
    """
    out = []
    for ch in arg:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and dollars:
            out.append("$$")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def systemd_unit(d: Daemon) -> str:
    exec_start = " ".join(systemd_quote(a) for a in d.argv)
    return (
        f"# Written by {PROG}; to change it, run `{PROG} systemd install -- OPTIONS...` again.\n"
        "[Unit]\n"
        f"Description={DESCRIPTION}\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        f"Environment={systemd_quote('PATH=' + d.path, dollars=False)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "KillSignal=SIGTERM\n"
        # SIGTERM to the daemon only: it ends its CLI processes itself after the grace period.
        "KillMode=mixed\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        f"TimeoutStopSec={d.stop_timeout}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


# ---- side effects

def run_command(argv: list[str]) -> tuple[int, str]:
    """
    Run a command without a shell: its exit status and what it said on stderr
    (stdout if stderr is empty; launchctl is not consistent).
    """
    try:
        done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL,
                              encoding="utf-8", errors="replace", check=False)
    except OSError as e:
        return 127, f"{argv[0]}: {e.strerror or e}"
    return done.returncode, (done.stderr or done.stdout).strip()


def write_file(path: Path, content: str) -> None:
    """
    Write via a temporary file and rename, so the manager never reads half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(content, encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, path)


def run_all(commands: Sequence[Command], run: Run) -> str | None:
    """
    Run the commands in order; the error message of the first checked one that fails.
    """
    for command in commands:
        code, err = run(list(command.argv))
        if code != 0 and command.check:
            return f"`{shlex.join(command.argv)}` failed (exit {code}): {err or 'no message'}"
    return None


def install(manager: Manager, content: str, run: Run) -> int:
    for directory in manager.dirs:
        directory.mkdir(parents=True, exist_ok=True)
    write_file(manager.file, content)
    error = run_all(manager.load, run)
    if error:
        print(f"{PROG}: {error}\n{PROG}: {manager.file} is written but not loaded.",
              file=sys.stderr)
        return 1
    print(f"Installed and started {manager.file}")
    return 0


def uninstall(manager: Manager, run: Run) -> int:
    error = run_all(manager.unload, run)
    existed = manager.file.exists()
    manager.file.unlink(missing_ok=True)
    error = error or run_all(manager.after_remove, run)
    if error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"Removed {manager.file}" if existed else f"Not installed ({manager.file} is absent)")
    return 0


# ---- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} {{launchd,systemd}} {{print,install,uninstall}} [-- CLAUDEPROXY-OPTIONS...]",
        description="Run `twistd -n claudeproxy` as a per-user service: a launchd agent "
                    "(macOS) or a systemd user unit (Linux).",
        epilog="print: write the file to stdout. install: write it and (re)load it. "
               "uninstall: unload and remove it. Options after `--` are the daemon's "
               "(see `twistd claudeproxy --help`); they are checked before anything is written.",
    )
    p.add_argument("manager", choices=("launchd", "systemd"))
    p.add_argument("action", choices=("print", "install", "uninstall"))
    return p


def main(argv: Sequence[str] | None = None, *, run: Run = run_command,
         home: Path | str | None = None, uid: int | None = None, find: Find = find_claude,
         environ: Mapping[str, str] | None = None, twistd: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, daemon_args = argv, []
    if "--" in argv:
        split = argv.index("--")
        ours, daemon_args = argv[:split], argv[split + 1:]
    p = parser()
    try:
        args = p.parse_args(ours)
        if args.action == "uninstall" and daemon_args:
            p.error("uninstall takes no claudeproxy options")
        try:
            options = daemon_options(daemon_args)
        except usage.UsageError as e:
            p.error(f"claudeproxy options: {e}")
    except SystemExit as e:
        # argparse exits; main returns the status for the console script to exit with.
        return e.code if isinstance(e.code, int) else 2

    home = Path.home() if home is None else Path(home)
    environ = os.environ if environ is None else environ
    if args.manager == "launchd":
        manager = launchd_manager(home, os.getuid() if uid is None else uid)
    else:
        manager = systemd_manager(home, environ)
    if args.action == "uninstall":
        # Needs neither claude nor twistd: they may be what was uninstalled first.
        return uninstall(manager, run)

    twistd = twistd or find_twistd()
    if twistd is None:
        print(f"{PROG}: twistd was not found next to {sys.executable} nor on PATH. "
              "Install claude-proxy (with pipx or pip) into this Python first.", file=sys.stderr)
        return 1
    try:
        # As the daemon looks: a --cli-env PATH=... also says where claude is.
        claude = find(options["claude"], {**environ, **dict(options["cli-env"])})
    except CLIMissing as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    d = daemon(twistd, claude, daemon_args, options)
    content = launchd_plist(d, home) if args.manager == "launchd" else systemd_unit(d)
    if args.action == "print":
        sys.stdout.write(content)
        return 0
    return install(manager, content, run)


if __name__ == "__main__":
    sys.exit(main())
