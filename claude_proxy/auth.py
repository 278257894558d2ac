"""
API keys: from --api-key and --api-key-file (one a line, reloaded on SIGHUP),
presented as `Authorization: Bearer KEY` or `x-api-key: KEY`, compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from attrs import define, field
from twisted.logger import Logger

from claude_proxy.errors import APIError

log = Logger()

INVALID_KEY = APIError(
    401, "Missing or invalid API key. Send it as `Authorization: Bearer <key>` or `x-api-key`.",
    "invalid_request_error", "invalid_api_key")


class KeyFileError(Exception):
    pass


def read_key_file(path: str) -> tuple[str, ...]:
    """One key a line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read the API key file {path}: {e}") from None
    keys = tuple(line.strip() for line in text.splitlines()
                 if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise KeyFileError(f"the API key file {path} holds no key")
    return keys


def presented_key(authorization: bytes | None, x_api_key: bytes | None) -> bytes | None:
    if authorization:
        scheme, _, token = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def _digest(key: bytes) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of key lengths.
    return hashlib.sha256(key).digest()


@define
class KeyRing:
    """The keys the daemon accepts; none at all means no authentication."""

    static: tuple[str, ...] = ()
    path: str | None = None
    _digests: tuple[bytes, ...] = field(default=(), init=False)

    def __attrs_post_init__(self) -> None:
        self.load()

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def load(self) -> None:
        """(Re)read the key file; raises KeyFileError, keeping the old keys."""
        keys = self.static + (read_key_file(self.path) if self.path else ())
        self._digests = tuple(_digest(k.encode("utf-8")) for k in keys)

    def reload(self) -> None:
        """For SIGHUP: a broken file is logged and the keys in use stay."""
        if self.path is None:
            log.info("SIGHUP: there is no --api-key-file to re-read")
            return
        try:
            self.load()
        except KeyFileError as e:
            log.error("API keys not reloaded: {error}", error=str(e))
            return
        log.info("API keys reloaded: {count} key(s)", count=len(self._digests))

    def match(self, presented: bytes | None) -> str | None:
        """
        An id of the matching key (a digest prefix: stable across reloads, safe
        to log, used for per-key limits), or None.
        """
        if presented is None:
            return None
        digest = _digest(presented)
        found = False
        for known in self._digests:  # no early exit: the same time whichever key matches
            found |= hmac.compare_digest(digest, known)
        return digest.hex()[:12] if found else None
