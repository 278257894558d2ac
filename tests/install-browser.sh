#!/usr/bin/env bash
# The status page's browser test drives Debian's chromium through Playwright (Playwright cannot
# download its own browser here). Installed with apt when missing and this runs as root.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "chromium is missing: install Debian's chromium package (the status page's test needs it)" >&2
fi
