"""
Log observers for twistd's --logger: `twistd --logger claude_proxy.logs.json claudeproxy`
writes one JSON object a line (every structured field of the access log
included) to standard output, for launchd, systemd's journal or a collector.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json() -> ILogObserver:
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
