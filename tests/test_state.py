"""The state file: created private, and moved aside when it cannot serve."""

import os
import sqlite3
import stat

import pytest

from claude_proxy.state import open_state, state_name


def test_a_new_file_is_private_in_a_private_directory(tmp_path):
    path = tmp_path / "state" / "state.sqlite3"
    open_state(str(path), 0).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


@pytest.mark.parametrize("content", [b"not a database at all" * 50,
                                     b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_damaged_file_is_moved_aside_for_an_empty_one(tmp_path, content):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(content)
    conn = open_state(str(path), 1_700_000_000)
    assert conn.execute("SELECT count(*) FROM responses").fetchone() == (0,)
    conn.close()
    aside = tmp_path / "state.sqlite3.unusable-20231114T221320"
    assert aside.read_bytes() == content


def test_a_file_of_a_newer_schema_is_moved_aside(tmp_path):
    path = tmp_path / "state.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    open_state(str(path), 0).close()
    assert [p.name for p in tmp_path.iterdir() if "unusable" in p.name]


def test_a_locked_file_is_moved_aside(tmp_path, monkeypatch):
    monkeypatch.setattr("claude_proxy.state.LOCK_WAIT_SECONDS", 0.0)
    path = tmp_path / "state.sqlite3"
    open_state(str(path), 0).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        open_state(str(path), 0).close()
    finally:
        holder.close()
    assert [p.name for p in tmp_path.iterdir() if "unusable" in p.name]


def test_one_file_per_set_of_listen_addresses():
    assert state_name(["tcp:1", "tcp:2"]) == state_name(["tcp:2", "tcp:1"])
    assert state_name(["tcp:1"]) != state_name(["tcp:2"])
