#!/usr/bin/env bash
# Install the pinned Claude Code CLI into a git-ignored cache for the end-to-end tests.
set -euo pipefail
VERSION=2.1.330
dest=${1:?usage: install-cli.sh DIR}
cli=$dest/node_modules/.bin/claude
if [ -x "$cli" ] && [ "$("$cli" --version 2>/dev/null | cut -d' ' -f1)" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$dest"
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error "@anthropic-ai/claude-code@$VERSION"
"$cli" --version
