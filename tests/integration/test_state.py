"""
State that outlives the daemon: stored Responses across a SIGTERM and a
restart (the real CLI against the mock API, whose request log shows what
reached the model), and a damaged state file that does not stop the daemon.
"""

from __future__ import annotations

import json
import os
import stat

from claude_proxy.state import state_name
from tests.integration.daemons import ANY_LOOPBACK_PORT, find_cli, start_mock_api, start_twistd


def post(daemon, path: str, body: dict):
    return daemon.request("POST", path, json.dumps(body).encode(),
                          {"content-type": "application/json"})


def state_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "state").iterdir() if ".sqlite3" in p.name)


def test_stored_responses_survive_a_restart(tmp_path):
    record = tmp_path / "mock-requests.jsonl"
    mock = start_mock_api("--record", str(record))
    args = ("--cli-env", f"ANTHROPIC_BASE_URL={mock.base_url}",
            "--cli-env", "ANTHROPIC_API_KEY=sk-test", "--cli-retries", "0",
            "--state-dir", str(tmp_path / "state"))  # the same for both daemons
    try:
        daemon = start_twistd(tmp_path, *args, cli=find_cli())
        first = post(daemon, "/v1/responses", {"model": "claude-haiku-4",
                                               "input": "Remember the word heliotrope."})
        assert first.status == 200, first.body
        kept, gone = first.json(), post(daemon, "/v1/responses",
                                        {"model": "claude-haiku-4", "input": "Forget me."}).json()
        assert daemon.request("DELETE", f"/v1/responses/{gone['id']}").status == 200
        assert daemon.stop() == 0  # SIGTERM

        [name] = state_files(tmp_path)
        assert stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700

        daemon = start_twistd(tmp_path, *args, cli=find_cli())
        again = daemon.request("GET", f"/v1/responses/{kept['id']}")
        # As GET answered before the restart (the SDK's output_text is the POST's alone).
        assert again.status == 200
        assert again.json() == {k: v for k, v in kept.items() if k != "output_text"}
        assert daemon.request("GET", f"/v1/responses/{gone['id']}").status == 404

        open(record, "w").close()
        follow = post(daemon, "/v1/responses", {"model": "claude-haiku-4",
                                                "previous_response_id": kept["id"],
                                                "input": "Which word?"})
        assert follow.status == 200, follow.body
        [sent] = [json.loads(line) for line in record.read_text().splitlines()
                  if json.loads(line)["path"].startswith("/v1/messages")]
        texts = [block["text"] for message in sent["body"]["messages"]
                 for block in (message["content"] if isinstance(message["content"], list)
                               else [{"type": "text", "text": message["content"]}])
                 if block.get("type") == "text"]
        said = kept["output"][0]["content"][0]["text"]
        assert any("heliotrope" in t for t in texts), texts
        assert any(said in t for t in texts), texts
        assert any("Which word?" in t for t in texts), texts

    finally:
        daemon.stop()
        mock.stop()


def test_a_damaged_state_file_is_moved_aside(tmp_path):
    name = state_name([ANY_LOOPBACK_PORT])
    path = tmp_path / "state" / name
    path.parent.mkdir()
    path.write_bytes(b"this is not a database" * 100)

    daemon = start_twistd(tmp_path, "--state-dir", str(tmp_path / "state"))
    try:
        assert daemon.health()["status"] == "ok"
        aside = [n for n in state_files(tmp_path) if n != name]
        assert len(aside) == 1 and aside[0].startswith(name + ".unusable-")
        assert (tmp_path / "state" / aside[0]).read_bytes().startswith(b"this is not a database")
        assert "moved aside" in daemon.log.read_text()
        stored = post(daemon, "/v1/responses", {"model": "claude-haiku-4", "input": "hi"})
        assert stored.status == 200, stored.body
        assert daemon.request("GET", f"/v1/responses/{stored.json()['id']}").status == 200
    finally:
        daemon.stop()
