"""
The daemon's state file: one SQLite database in --state-dir (the directory
0700, the file 0600) holding what should outlive a restart — stored Responses
and the recent-request history.

It is opened, checked and read once at start-up, before any request is
served; from then on every statement runs on one worker thread with the one
connection, off the reactor, in the order it was given. A file that is
damaged, locked or unreadable never keeps the daemon from starting: it is
moved aside (the log says where) and an empty one takes its place.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from claude_proxy.cli_lifetime import listen_digest

log = Logger()

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    response TEXT NOT NULL,
    context TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at);
"""
# How long start-up waits for a lock another process holds before giving the file up.
LOCK_WAIT_SECONDS = 2.0
# SQLite's companions of a database file, moved aside with it.
COMPANIONS = ("-journal", "-wal", "-shm")


def state_name(listen: Sequence[str]) -> str:
    """One state file per set of --listen addresses, as for the tether's record."""
    return f"state-{listen_digest(listen)}.sqlite3"


class Unusable(Exception):
    """The file cannot serve as the state file (its reason is the message)."""


def _connect(path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # The one connection is used on the worker thread after start-up.
    conn = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS, check_same_thread=False,
                           isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise Unusable(f"integrity check: {check}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise Unusable(f"schema version {version}, this daemon knows {SCHEMA_VERSION}")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except (sqlite3.Error, Unusable):
        conn.close()
        raise
    return conn


def move_aside(path: str, now: float) -> str:
    """Rename the file (and its journal) out of the way; the new name."""
    aside = f"{path}.unusable-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}"
    for suffix in ("", *COMPANIONS):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside


def open_state(path: str, now: float) -> sqlite3.Connection:
    """The state file's connection; a file that cannot serve is moved aside for an empty one."""
    try:
        return _connect(path)
    except (sqlite3.Error, Unusable, OSError) as e:
        reason = str(e) or type(e).__name__
    try:
        aside = move_aside(path, now)
    except OSError as e:
        raise SystemExit(f"claude-proxy: the state file {path} cannot be used ({reason}) nor "
                         f"moved aside ({e.strerror}); remove it or pick another --state-dir.")
    log.warn("The state file {path} could not be used ({reason}); moved aside to {aside}, "
             "starting with an empty one (stored responses and request history are gone)",
             path=path, reason=reason, aside=aside)
    try:
        return _connect(path)
    except (sqlite3.Error, Unusable, OSError) as e:
        raise SystemExit(f"claude-proxy: cannot create the state file {path}: {e}") from None


@define
class StateFile:
    """The open state file: reads at start-up, then writes in order on its own thread."""

    path: str
    reactor: Any  # IReactorThreads
    _conn: sqlite3.Connection | None = field(default=None, init=False)
    _pool: ThreadPool | None = field(default=None, init=False)

    def open(self) -> None:
        self._conn = open_state(self.path, self.reactor.seconds())
        self._pool = ThreadPool(1, 1, name="claude-proxy-state")
        self._pool.start()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Rows, read at once: for start-up only, before requests are served."""
        assert self._conn is not None
        return self._conn.execute(sql, args).fetchall()

    def write(self, sql: str, args: Sequence[Any] = ()) -> Deferred[None]:
        """A statement, run after those given before it; a failure is logged, not raised."""
        def execute(conn: sqlite3.Connection) -> None:
            conn.execute(sql, args)

        return self.run(execute)

    def run(self, work: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        if self._pool is None:
            return succeed(None)  # closed (or never opened): nothing to keep
        conn = self._conn
        d = deferToThreadPool(self.reactor, self._pool, work, conn)
        d.addErrback(lambda f: log.failure("The state file {path}: a write failed", f,
                                           path=self.path))
        return d

    def close(self) -> Deferred[None]:
        """After every write given so far: close the file and let the thread go."""
        pool, conn = self._pool, self._conn
        if pool is None or conn is None:
            return succeed(None)
        self._pool = None

        def stop(_: object) -> None:
            pool.stop()
            self._conn = None

        d = deferToThreadPool(self.reactor, pool, conn.close)
        d.addErrback(lambda f: log.failure("The state file {path}: closing failed", f,
                                           path=self.path))
        d.addCallback(stop)
        return d
