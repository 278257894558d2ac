"""
An OpenAI-compatible HTTP API in front of a logged-in Claude Code CLI.
"""

__version__ = "0.1.0"
