"""Globally unique, time-ordered ids (ULIDs) for deployments.

A ULID is 26 characters of Crockford's base32: 48 bits of milliseconds since the epoch, then
80 random bits. Ids made later sort after earlier ones (to the millisecond), and two
controllers never make the same one, so an id names one deployment everywhere: in events,
published status, promotion records and evidence.
"""

from __future__ import annotations

import os
import re
import time

__all__ = ["ULID_PATTERN", "is_ulid", "new_ulid", "ulid_time"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_PATTERN = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def new_ulid(at: float | None = None, *, randomness: bytes | None = None) -> str:
    """A new ULID for the time ``at`` (seconds since the epoch; now by default)."""
    ms = int((time.time() if at is None else at) * 1000)
    if not 0 <= ms < 2**48:
        raise ValueError(f"time out of a ULID's range: {at!r}")
    rand = randomness if randomness is not None else os.urandom(10)
    if len(rand) != 10:
        raise ValueError("a ULID has 80 random bits")
    value = (ms << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_ulid(text: str) -> bool:
    return bool(ULID_PATTERN.match(text.upper()))


def ulid_time(ulid: str) -> float:
    """The time a ULID was made, in seconds since the epoch."""
    value = 0
    for c in ulid.upper()[:10]:
        value = value * 32 + _ALPHABET.index(c)
    return value / 1000
