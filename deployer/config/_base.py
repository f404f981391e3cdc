"""What every config model shares: strict, frozen models and the value formats they accept."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["COUNT_OR_PERCENT", "HAPROXY_NAME", "NAME", "Model", "count_or_percent", "parse_size"]

# Environment, application and leg names.
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# What HAProxy accepts as a proxy or server name; the name is written into runtime-API commands,
# where ';' or a newline would start another command.
HAPROXY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
COUNT_OR_PERCENT = re.compile(r"^(?:[1-9][0-9]*|(?:100|[1-9][0-9]?)%)$")
_SIZE = re.compile(r"^([0-9]+)\s*([KMG]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}


class Model(BaseModel):
    """Unknown fields are refused (a typo never passes silently); values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("must be a positive size such as 536870912, '512MiB' or '2GB'")


def count_or_percent(v: object) -> object:
    """A count of nodes ("2", 2) or a share of them ("25%"); "0" passes (callers say what it
    means for them)."""
    if v is None:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not COUNT_OR_PERCENT.match(v.strip()):
        if v == "0":
            return v
        raise ValueError("must be a positive count such as 1 or a percentage such as 25%")
    return v.strip()
