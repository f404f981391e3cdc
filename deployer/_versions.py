"""Validation of version strings wherever they enter (CLI, config, manifests)."""

from __future__ import annotations

import re

from ._errors import VersionError

__all__ = ["VERSION_PATTERN", "validate_version"]

# SemVer-like: starts with an alphanumeric, then letters, digits, '.', '-', '+' and '_'.
# No '/', whitespace or shell metacharacters, so a version is always safe as a path component
# and as a shell word.
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,127}$")


def validate_version(value: object, *, where: str = "version") -> str:
    """Return ``value`` if it is an acceptable version string, else raise VersionError."""
    if not isinstance(value, str):
        raise VersionError(f"{where}: a version must be a string (got {value!r})")
    if not VERSION_PATTERN.match(value) or ".." in value:
        raise VersionError(
            f"{where}: {value!r} is not a valid version: use letters, digits, '.', '-', '+', '_' "
            "(at most 128 characters, starting with a letter or digit, no '..', '/', spaces or "
            "shell characters)"
        )
    return value
