"""Jinja filter of the deployer_release role: a value made safe for the file it is written into
(a systemd unit or a supervisord program file), or a clear error naming the variable.

``value | deployer_release_escape(kind, what)``: ``what`` names the variable in the error. Kinds:

- ``systemd``: a setting's value (paths, Description). ``%`` becomes ``%%`` (systemd expands
  specifiers such as ``%b``); control characters (a newline would start a new setting) are refused.
- ``systemd_exec``: the command of ``ExecStart=``, one word: as it is when plain, else
  double-quoted with C escapes, ``%%`` and ``$$`` (systemd expands ``$VAR`` in command lines).
- ``systemd_word``: one word of a list setting (``ReadWritePaths=``): as ``systemd_exec`` but
  ``$`` left alone (only command lines expand variables).
- ``systemd_env_file``: a mapping of environment variables, as the lines of a file for
  ``EnvironmentFile=`` (``NAME="value"``): inside the double quotes a backslash, ``"``, ``$``
  and a backtick are backslash-escaped and everything else is verbatim, newlines included
  (systemd.exec(5)); refused: NUL, U+FEFF and Unicode noncharacters, which systemd does not
  accept there.
- ``supervisord``: a value of a program section. ``%`` becomes ``%%`` (supervisord expands
  ``%(name)s``); refused: control characters, and ``;`` or ``#`` after a space (its parser cuts
  an inline comment there).
- ``supervisord_command``: the command, quoted as supervisord splits it (POSIX shell words).
- ``supervisord_logfile``: a log file path; supervisord expands it twice, so ``%`` is refused.
- ``supervisord_env``: a mapping, as a list of ``NAME="value"`` items for ``environment=``.
  supervisord's parser has no escapes: a value is quoted with the quote it does not hold; one
  holding both quotes, or starting or ending with one (they are stripped), is refused.
- ``systemd_settings``: a mapping of extra ``[Service]`` settings, as a list of ``Name=value``
  lines: names are letters only (``ProtectSystem``), booleans become ``yes``/``no``, a list is
  space-separated words; values as for ``systemd``.
- ``umask``: an octal umask such as ``027``.
- ``account``: a user or group name (also ``User=``/``user=``): letters, digits, ``_``, ``-``.

An error about an environment value names the variable, never its value (it may be a secret).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

SETTING_NAME = re.compile(r"^[A-Z][A-Za-z]+$")
UMASK = re.compile(r"^0?[0-7]{3}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ACCOUNT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PLAIN_WORD = re.compile(r"^[A-Za-z0-9_./@+=:,-]+$")
INLINE_COMMENT = re.compile(r"\s[;#]")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


class EscapeError(AnsibleFilterError):
    """A value that cannot be written safely into the file; the message names the variable."""


# Stands for a value an error must not show (an environment value may be a secret).
HIDDEN = object()


def _refuse(what: str, value: object, where: str, why: str) -> EscapeError:
    if value is HIDDEN:
        return EscapeError(f"{what}: its value (not shown) cannot be written into {where}: {why}")
    return EscapeError(f"{what}: the value {value!r} cannot be written into {where}: {why}")


def _no_control(what: str, value: str, where: str) -> str:
    if CONTROL.search(value):
        raise _refuse(what, value, where, "it holds a control character such as a newline")
    return value


def _c_escape(value: str) -> str:
    out = []
    for char in value:
        if char in _C_ESCAPES:
            out.append(_C_ESCAPES[char])
        elif CONTROL.match(char):
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _env_items(what: str, value: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        raise _refuse(what, HIDDEN, where, "it must be a mapping of variable names to values")
    items = []
    for name, item in value.items():
        name = str(name)
        if not ENV_NAME.match(name):
            raise _refuse(
                f"{what}.{name}", name, where,
                "an environment variable name is letters, digits and '_', not starting with a digit",
            )
        items.append((name, "" if item is None else str(item)))
    return items


def systemd(value: object, what: str) -> str:
    return _no_control(what, str(value), "a systemd unit").replace("%", "%%")


def systemd_word(value: object, what: str) -> str:
    text = _no_control(what, str(value), "a systemd unit")
    if PLAIN_WORD.match(text):
        return text
    return '"' + _c_escape(text).replace("%", "%%") + '"'


def systemd_exec(value: object, what: str) -> str:
    text = _no_control(what, str(value), "a systemd unit")
    if PLAIN_WORD.match(text):
        return text
    return '"' + _c_escape(text).replace("%", "%%").replace("$", "$$") + '"'


def _env_file_refused(char: str) -> bool:
    code = ord(char)
    return char in ("\0", "\ufeff") or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def systemd_env_file(value: object, what: str) -> list[str]:
    where = "a systemd environment file"
    lines = []
    for name, item in _env_items(what, value, where):
        if any(_env_file_refused(char) for char in item):
            raise _refuse(f"{what}.{name}", HIDDEN, where, "it holds NUL, U+FEFF or a Unicode noncharacter")
        quoted = "".join("\\" + char if char in '\\"$`' else char for char in item)
        lines.append(f'{name}="{quoted}"')
    return lines


def _systemd_word(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def systemd_settings(value: object, what: str) -> list[str]:
    where = "a systemd unit"
    if not isinstance(value, Mapping):
        raise _refuse(what, value, where, "it must be a mapping of setting names to values")
    lines = []
    for name, item in value.items():
        name = str(name)
        if not SETTING_NAME.match(name):
            raise _refuse(f"{what}.{name}", name, where, "a setting name is letters only, e.g. ProtectSystem")
        if item is None:
            continue  # a setting switched off by an override
        if isinstance(item, list | tuple):
            text = " ".join(_systemd_word(word) for word in item)
        else:
            text = _systemd_word(item)
        lines.append(f"{name}={systemd(text, f'{what}.{name}')}")
    return lines


def umask(value: object, what: str) -> str:
    text = str(value)
    if not UMASK.match(text):
        raise _refuse(what, text, "a supervisord program file", "a umask is three octal digits, e.g. 027")
    return text.zfill(3)[-3:]


def _supervisord_problem(text: str) -> str | None:
    """Why supervisord would not read ``text`` back as it is, or None."""
    if CONTROL.search(text):
        return "it holds a control character such as a newline"
    if INLINE_COMMENT.search(text):
        return "supervisord would cut it at ';' or '#' after a space"
    return None


def supervisord(value: object, what: str) -> str:
    text = str(value)
    problem = _supervisord_problem(text)
    if problem:
        raise _refuse(what, text, "a supervisord program file", problem)
    return text.replace("%", "%%")


def supervisord_command(value: object, what: str) -> str:
    return supervisord(shlex.quote(str(value)), what)


def supervisord_logfile(value: object, what: str) -> str:
    text = str(value)
    if "%" in text:
        raise _refuse(what, text, "a supervisord program file", "supervisord expands '%' in log paths")
    return supervisord(text, what)


def supervisord_env(value: object, what: str) -> list[str]:
    where = "a supervisord program file"
    pairs = []
    for name, item in _env_items(what, value, where):
        label = f"{what}.{name}"
        problem = _supervisord_problem(item)
        if problem:
            raise _refuse(label, HIDDEN, where, problem)
        if '"' in item and "'" in item:
            raise _refuse(label, HIDDEN, where, "supervisord cannot quote a value holding both ' and \"")
        if item[:1] in ("'", '"') or item[-1:] in ("'", '"'):
            raise _refuse(label, HIDDEN, where, "supervisord strips quotes at either end of a value")
        quote = "'" if '"' in item else '"'
        pairs.append(f"{name}={quote}{item.replace('%', '%%')}{quote}")
    return pairs


def account(value: object, what: str) -> str:
    text = str(value)
    if not ACCOUNT.match(text):
        raise _refuse(
            what, text, "a systemd unit or supervisord program file",
            "a user or group name is letters, digits, '_', '.' or '-', starting with a letter or '_'",
        )
    return text


KINDS: dict[str, Callable[[object, str], Any]] = {
    "systemd": systemd,
    "systemd_exec": systemd_exec,
    "systemd_word": systemd_word,
    "systemd_env_file": systemd_env_file,
    "systemd_settings": systemd_settings,
    "umask": umask,
    "supervisord": supervisord,
    "supervisord_command": supervisord_command,
    "supervisord_logfile": supervisord_logfile,
    "supervisord_env": supervisord_env,
    "account": account,
}


def deployer_release_escape(value: object, kind: str, what: str = "value") -> Any:
    try:
        escape = KINDS[kind]
    except KeyError:
        known = ", ".join(KINDS)
        raise EscapeError(f"deployer_release_escape: unknown kind {kind!r} (one of {known})") from None
    return escape(value, what)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"deployer_release_escape": deployer_release_escape}
