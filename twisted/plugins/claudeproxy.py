from twisted.application.service import ServiceMaker

ClaudeProxy = ServiceMaker(
    "claude-proxy",
    "claude_proxy.tap",
    "An OpenAI-compatible API over your logged-in Claude Code CLI.",
    "claudeproxy",
)
