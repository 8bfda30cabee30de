"""The webhook signature check (pure): HMAC-SHA256 over the raw body, hex, any case, constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _units(match: re.Match[str]) -> str:
    # .NET strings are UTF-16: a character beyond the BMP is two code units, so two "?".
    return "??" if ord(match.group()) > 0xFFFF else "?"


def dotnet_ascii(body: bytes) -> bytes:
    """The bytes Tradevine's C# sample hashes: `Encoding.ASCII.GetBytes(payload)`.

    The payload is read as UTF-8 text (an invalid sequence becomes U+FFFD) and every UTF-16 code
    unit outside ASCII becomes `?`.
    """
    if body.isascii():
        return body
    return _NON_ASCII.sub(_units, body.decode("utf-8", "replace")).encode("ascii")


def sign(body: bytes, secret: bytes) -> str:
    """Lowercase hex HMAC-SHA256, as Tradevine sends it."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_ok(body: bytes, header: str | None, *, secrets: Sequence[bytes], ascii_compat: bool) -> bool:
    """True when `header` is the signature of `body` (or its ASCII-compat form) under any secret."""
    if not header or not secrets:
        return False
    offered = header.strip().lower().encode("ascii", "replace")
    bodies = [body]
    if ascii_compat and not body.isascii():
        bodies.append(dotnet_ascii(body))
    # Every candidate is compared, so the time taken does not tell which secret or form matched.
    matched = False
    for secret in secrets:
        for candidate in bodies:
            matched |= hmac.compare_digest(sign(candidate, secret).encode(), offered)
    return matched


def header_ok(offered: bytes | None, expected: bytes) -> bool:
    """Constant-time comparison of the custom header's raw value."""
    return offered is not None and hmac.compare_digest(offered.strip(), expected)
