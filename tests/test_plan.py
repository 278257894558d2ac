import json

from claude_proxy.openai_chat.parse import parse_chat_request
from claude_proxy.plan import CLISettings, TurnSettings, build_plan

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
    argv = plan.argv("/scratch/system-prompt.txt", plan.settings)
    assert not any("SYSTEM" in a or "PROMPT" in a for a in argv)
    assert argv[argv.index("--system-prompt-file") + 1] == "/scratch/system-prompt.txt"
    assert plan.system_prompt == "SYSTEM" * 40_000
    [batch] = plan.stdin
    assert json.loads(batch) == {"type": "user", "parent_tool_use_id": None, "message": {
        "role": "user", "content": [{"type": "text", "text": "PROMPT" * 40_000}]}}
    assert batch.endswith(b"\n") and batch.count(b"\n") == 1


def test_argv_runs_sandboxed_stream_json():
    plan = plan_for()
    argv = plan.argv("f", plan.settings)
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
    # The CLI never compacts the client's conversation (measured in test_faults).
    assert env["DISABLE_COMPACT"] == env["DISABLE_AUTO_COMPACT"] == "1"
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
    assert plan.spawn_env(plan.settings)["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "64"
    plan = plan_for()
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS" not in plan.spawn_env(plan.settings)


def test_a_turns_settings_are_not_the_process_shape():
    def plan(**extra):
        return plan_for({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}],
                         **extra})

    asked = plan(max_tokens=64, reasoning_effort="high")
    assert asked.settings == TurnSettings("high", 64)
    assert asked.warm_key == plan().warm_key  # thinking, effort and max tokens change in place
    env = asked.spawn_env(asked.settings)
    assert "CLAUDE_CODE_DISABLE_THINKING" not in env
    argv = asked.argv("f", asked.settings)
    assert argv[argv.index("--effort") + 1] == "high"
    off = plan().settings
    assert plan().spawn_env(off)["CLAUDE_CODE_DISABLE_THINKING"] == "1"
    assert "--effort" not in plan().argv("f", off)
    assert plan(model="opus").warm_key != plan().warm_key


def test_flag_settings_undo_what_a_turn_does_not_ask_for():
    # An empty value is the CLI's default; what --cli-env fixes is left alone.
    assert TurnSettings("high", None).flag_settings({}) == {
        "effortLevel": "high",
        "env": {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "", "CLAUDE_CODE_DISABLE_THINKING": ""}}
    assert TurnSettings(None, 64).flag_settings({"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "9"}) == {
        "effortLevel": None, "env": {"CLAUDE_CODE_DISABLE_THINKING": "1"}}


def test_an_alias_runs_under_the_id_the_cli_resolved_it_to():
    request = parse_chat_request({"model": "claude-sonnet-4", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"}]})
    plan = build_plan(request, CLISettings("/bin/claude"), {}, {"sonnet": "claude-sonnet-5-5"})
    argv = plan.argv("f", plan.settings)
    assert argv[argv.index("--model") + 1] == "claude-sonnet-5-5"
    assert json.loads(plan.stdin[1].splitlines()[0])["message"]["model"] == "claude-sonnet-5-5"
    # Its shape is the alias's, however it was resolved.
    assert plan.warm_key == build_plan(request, CLISettings("/bin/claude"), {}).warm_key


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
