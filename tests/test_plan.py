import json

from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.plan import CLISettings, build_plan

ENVIRON = {
    "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "HTTPS_PROXY": "http://proxy:3128", "CLAUDE_CONFIG_DIR": "/home/u/.claude",
    "ANTHROPIC_API_KEY": "sk-secret", "ANTHROPIC_AUTH_TOKEN": "tok",
    "ANTHROPIC_BASE_URL": "http://evil", "AWS_SECRET_ACCESS_KEY": "x", "PYTHONPATH": "/x",
}


def plan_for(body=None, settings=None):
    body = body or {"model": "claude-opus-4", "messages": [
        {"role": "system", "content": "SYSTEM" * 40_000},
        {"role": "user", "content": "PROMPT" * 40_000},
    ]}
    return build_plan(parse_chat_request(body), settings or CLISettings("/bin/claude"), ENVIRON)


def test_prompts_never_reach_argv():
    plan = plan_for()
    argv = plan.argv("/scratch/system-prompt.txt")
    assert not any("SYSTEM" in a or "PROMPT" in a for a in argv)
    assert argv[argv.index("--system-prompt-file") + 1] == "/scratch/system-prompt.txt"
    assert plan.system_prompt == "SYSTEM" * 40_000
    [batch] = plan.stdin
    assert json.loads(batch) == {"type": "user", "parent_tool_use_id": None, "message": {
        "role": "user", "content": [{"type": "text", "text": "PROMPT" * 40_000}]}}
    assert batch.endswith(b"\n") and batch.count(b"\n") == 1


def test_argv_runs_sandboxed_stream_json():
    argv = plan_for().argv("f")
    assert argv[:2] == ["/bin/claude", "-p"]
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1)}
    assert pairs["--model"] == "opus"
    assert pairs["--output-format"] == pairs["--input-format"] == "stream-json"
    assert pairs["--tools"] == "" and pairs["--setting-sources"] == ""
    for flag in ("--verbose", "--include-partial-messages", "--strict-mcp-config",
                 "--no-session-persistence", "--restricted", "--disable-slash-commands"):
        assert flag in argv
    assert "--bare" not in argv


def test_environment_is_an_allowlist():
    env = plan_for().env
    for kept in ("PATH", "HOME", "LANG", "LC_ALL", "HTTPS_PROXY"):
        assert env[kept] == ENVIRON[kept]
    # The login is read from the user's config dir; everything else from a scratch one.
    assert "CLAUDE_CONFIG_DIR" not in env
    assert env["CLAUDE_SECURESTORAGE_CONFIG_DIR"] == "/home/u/.claude"
    for dropped in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                    "AWS_SECRET_ACCESS_KEY", "PYTHONPATH"):
        assert dropped not in env
    assert env["CLAUDE_CODE_DISABLE_AUTO_MEMORY"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"  # as --cli-retries


def test_cli_env_is_the_explicit_way_in():
    settings = CLISettings("/bin/claude", 0, (("ANTHROPIC_BASE_URL", "http://127.0.0.1:1"),))
    env = plan_for(settings=settings).env
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    assert "ANTHROPIC_API_KEY" not in env


def test_max_tokens_reaches_the_cli():
    plan = plan_for({"model": "sonnet", "max_tokens": 64,
                     "messages": [{"role": "user", "content": "hi"}]})
    assert plan.env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "64"
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in plan_for().env


def test_default_login_location_when_no_config_dir_is_set():
    environ = {k: v for k, v in ENVIRON.items() if k != "CLAUDE_CONFIG_DIR"}
    plan = build_plan(parse_chat_request({"model": "opus", "messages": [
        {"role": "user", "content": "hi"}]}), CLISettings("/bin/claude"), environ)
    assert plan.env["CLAUDE_SECURESTORAGE_CONFIG_DIR"] == ""


def test_slash_commands_in_prompts_stay_text():
    plan = plan_for({"model": "sonnet", "messages": [{"role": "user", "content": "/model opus"}]})
    [batch] = plan.stdin
    assert json.loads(batch)["message"]["content"] == [{"type": "text", "text": " /model opus"}]


def test_every_text_block_starting_with_a_slash_stays_text():
    plan = plan_for({"model": "sonnet", "messages": [
        {"role": "user", "content": "please run"}, {"role": "user", "content": "/model x"}]})
    [batch] = plan.stdin
    assert [b["text"] for b in json.loads(batch)["message"]["content"]] == ["please run", " /model x"]
