"""What counts as a secret in a playbook run, and taking secrets out of what is kept of it.

A value is secret when it is

- the value of an environment variable or extra variable (at any depth of a mapping) whose name
  looks secret (:func:`secret_name`: it contains SECRET, TOKEN, PASSWORD, PASSWD, PASSPHRASE,
  CREDENTIAL, PRIVATE or APIKEY, or has KEY, KEYS, PASS or AUTH as one of its parts, in any case:
  ``AWS_SECRET_ACCESS_KEY``, ``db_password``, ``AWS_ACCESS_KEY_ID`` but not ``KEYBOARD``);
- the value of a variable named in the config's ``runner.secret_vars``;
- the signed part of a URL given in the extra variables: its query (and each value in it) and the
  password of its credentials, e.g. a presigned S3 URL's signature and session token.

Values shorter than :data:`MIN_LENGTH` characters are not looked for: they would match all over
the place and say little. A :class:`Redactor` replaces every secret, as written or in the forms
in which a run writes it down (JSON-escaped, URL-encoded), with :data:`REDACTED`.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_LENGTH",
    "REDACTED",
    "Redactor",
    "env_secrets",
    "extravar_secrets",
    "redacted_url",
    "secret_name",
    "url_secrets",
    "write_private",
]

REDACTED = "<redacted>"
MIN_LENGTH = 6

_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "PRIVATE", "APIKEY")
_SECRET_PARTS = frozenset({"KEY", "KEYS", "PASS", "AUTH"})
_PARTS = re.compile(r"[^A-Z0-9]+")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def secret_name(name: str) -> bool:
    """Whether a variable of this name holds a secret (see the module's docstring)."""
    upper = name.upper()
    if any(word in upper for word in _SECRET_WORDS):
        return True
    return not _SECRET_PARTS.isdisjoint(_PARTS.split(upper))


def url_secrets(url: str) -> set[str]:
    """The signed or private parts of a URL: its query, each value in the query (as written and
    decoded) and the password of its credentials. Nothing for a string that is not a URL."""
    if not _URL.match(url):
        return set()
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found: set[str] = set()
    if password:
        found.update({password, urllib.parse.unquote(password)})
    if parts.query:
        found.add(parts.query)
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            if value:
                found.update({value, urllib.parse.unquote_plus(value)})
    return found


def env_secrets(env: Mapping[str, str], secret_vars: Collection[str] = ()) -> set[str]:
    """The values of the environment variables whose names look secret or are listed."""
    return {
        value for name, value in env.items()
        if value and (name in secret_vars or secret_name(name))
    }


def extravar_secrets(extravars: Mapping[str, Any], secret_vars: Collection[str] = ()) -> set[str]:
    """The secret values of a run's extra variables: every value under a name that looks secret
    or is listed (at any depth), and the signed parts of every URL."""
    found: set[str] = set()

    def walk(value: Any, secret: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, secret or (isinstance(key, str) and (key in secret_vars or secret_name(key))))
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item, secret)
        elif isinstance(value, str):
            if secret:
                found.add(value)
            found.update(url_secrets(value))
        elif secret and isinstance(value, int | float) and not isinstance(value, bool):
            found.add(str(value))

    walk(extravars, False)
    return found


def _forms(secret: str) -> set[str]:
    """A secret as it may be written down: as is, JSON-escaped, URL-encoded."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }


class Redactor:
    """Replaces a set of secrets with :data:`REDACTED` in text, in nested values and in files.

    Built once per run (one regular expression of every secret in every form, longest first),
    so each check is a single scan; with no secret at all every method returns at once.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if len(secret) >= MIN_LENGTH for form in _forms(secret)}
        ordered = sorted((f for f in forms if len(f) >= MIN_LENGTH), key=lambda f: (-len(f), f))
        self.count = len(ordered)
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._bytes = (
            re.compile(b"|".join(re.escape(f.encode()) for f in ordered)) if ordered else None
        )

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        if self._text is None or not text:
            return text
        return self._text.sub(REDACTED, text)

    def value(self, value: Any) -> Any:
        """A copy of ``value`` (strings, mappings, lists, nested) with every secret replaced."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self._text.sub(REDACTED, value)
        if isinstance(value, Mapping):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def event(self, event: dict[str, Any]) -> None:
        """Redact one ansible-runner event in place, before it is written or read: a scan of its
        JSON text first, so an event without secrets (nearly all) costs one search."""
        if self._text is None:
            return
        try:
            text = json.dumps(event, default=str)
        except (TypeError, ValueError):
            text = ""
        if text and self._text.search(text) is None:
            return
        for key in list(event):
            event[key] = self.value(event[key])

    def file(self, path: Path) -> bool:
        """Rewrite ``path`` without its secrets (same mode, replaced atomically); True if it had
        any."""
        if self._bytes is None:
            return False
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if self._bytes.search(data) is None:
            return False
        write_private(path, self._bytes.sub(REDACTED.encode(), data))
        return True


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable by its owner only (0600)."""
    tmp = path.with_name(f".{path.name}.redacting")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def redacted_url(url: str) -> str:
    """A download URL as the journal keeps it: no query (a presigned URL's signature lives
    there) and no credentials."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "?<signed query not recorded>" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query
