"""The deployment lock's program: run on the host that keeps an environment's lock (the load
balancer's host, or this machine) as ``python3 - REQUEST`` with this file on its standard input.

It uses the standard library only (the host's own Python 3), does one operation per run, and
does it atomically: under ``flock`` on a guard file, it reads the lock file, decides, writes the
new record (to a temporary file, renamed over the old one) and appends what it removed or took
over to a log beside it. Files, for environment ``E`` in the lock directory::

    E.json         the holder's record (absent: the environment is free)
    E.freeze.json  the environment's emergency freeze: who froze it, when, why (absent: none)
    E.guard        the guard file every operation locks (never removed)
    E.log          one JSON line per removal or takeover of the lock, and per freeze and
                   unfreeze: when, by whom, why, the record

Every time is this host's clock, so controllers with clocks apart still agree on a lease.

The request (JSON, the first argument) has ``op``, ``dir``, ``env`` and the operation's fields;
the answer is one JSON line on standard output, ``{"result": ..., "record": ..., "now": ...}`` or
``{"error": ...}``. :func:`decide` is the whole policy, without files, so that a fake lock host
can apply the very same rules in memory.

Operations (an identity is ``{"host", "pid", "pid_start"}``):

- ``show``: the record, if any;
- ``acquire`` (``record``, ``lease``, ``take_over``): take a free or expired lock, or one whose
  holder the caller found gone (``take_over`` names that exact holder and its ``acquired_at``);
  renew it when the caller already holds it; else answer ``held`` with the holder;
- ``renew`` (``identity``, ``lease``, ``deployment``): push the lease on when the caller holds the
  lock (and record its deployment); else answer ``lost`` with whoever holds it now, if anyone.
  The answer also carries the environment's freeze (``freeze``), read under the same guard: a
  deployment confirming its lock at a safe point learns of a freeze in the same round trip;
- ``release`` (``identity``): remove the lock only if the caller holds it;
- ``remove`` (``by``, ``reason``, ``force``, ``expect``): remove it when its lease has expired, or
  when it is exactly ``expect`` (a holder the caller found gone), or when ``force`` is set;
  else answer ``refused`` with the holder.

The freeze, kept beside the lock so that every controller and agent of the environment reads
the same one (:func:`decide_freeze`):

- ``freeze_show``: the freeze, if any;
- ``freeze`` (``by``, ``reason``): freeze the environment, unless it is frozen already (then
  answer ``already`` with that freeze: the first stays on the record);
- ``unfreeze`` (``by``, ``reason``): lift the freeze (``absent`` when there is none).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

# Seconds an operation waits for another one holding the guard file.
GUARD_TIMEOUT = 10.0
_IDENTITY = ("host", "pid", "pid_start")


def same_holder(record: dict[str, Any] | None, identity: dict[str, Any] | None) -> bool:
    """True when ``record`` was written by the process ``identity`` names (host, PID and the
    PID's start time: a reused PID is another process)."""
    if record is None or identity is None:
        return False
    return all(record.get(k) == identity.get(k) for k in _IDENTITY)


def expired(record: dict[str, Any], now: float) -> bool:
    return float(record.get("expires_at", 0)) <= now


def decide(
    current: dict[str, Any] | None, request: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """One operation on the lock whose record is ``current`` (None: free) at time ``now``.

    Returns (changed, the new record or None, the answer, a log entry or None)."""
    op = request.get("op")
    answer: dict[str, Any] = {"now": now, "record": current}
    if op == "show":
        answer["result"] = "shown"
        return False, current, answer, None
    if op == "acquire":
        mine = dict(request["record"])
        lease = float(request["lease"])
        previous = None
        event = None
        if current is not None and same_holder(current, mine):
            mine["acquired_at"] = current.get("acquired_at", now)
            if mine.get("deployment") is None:
                mine["deployment"] = current.get("deployment")
        elif current is not None:
            take_over = request.get("take_over")
            gone = (
                take_over is not None and same_holder(current, take_over)
                and current.get("acquired_at") == take_over.get("acquired_at")
            )
            if not (expired(current, now) or gone):
                answer["result"] = "held"
                return False, current, answer, None
            previous = current
            event = "took over (its lease had expired)" if expired(current, now) else (
                "took over (its process is gone from its host)"
            )
            mine["acquired_at"] = now
        else:
            mine["acquired_at"] = now
        mine["renewed_at"] = now
        mine["expires_at"] = now + lease
        answer.update(result="acquired", record=mine, previous=previous)
        log = None
        if previous is not None:
            log = {"at": now, "event": event, "by": mine.get("owner"), "reason": "",
                   "record": previous}
        return True, mine, answer, log
    if op == "renew":
        if not same_holder(current, request["identity"]):
            answer["result"] = "lost"
            return False, current, answer, None
        assert current is not None
        renewed = dict(current)
        renewed["renewed_at"] = now
        renewed["expires_at"] = now + float(request["lease"])
        if request.get("deployment") is not None:
            renewed["deployment"] = request["deployment"]
        answer.update(result="renewed", record=renewed)
        return True, renewed, answer, None
    if op == "release":
        if not same_holder(current, request["identity"]):
            answer["result"] = "not_held"
            return False, current, answer, None
        answer["result"] = "released"
        return True, None, answer, None
    if op == "remove":
        if current is None:
            answer["result"] = "absent"
            return False, None, answer, None
        expect = request.get("expect")
        gone = (
            expect is not None and same_holder(current, expect)
            and current.get("acquired_at") == expect.get("acquired_at")
        )
        force = bool(request.get("force"))
        if not (force or expired(current, now) or gone):
            answer["result"] = "refused"
            return False, current, answer, None
        why = "forced" if force and not (expired(current, now) or gone) else (
            "removed (its lease had expired)" if expired(current, now)
            else "removed (its process is gone from its host)"
        )
        answer.update(result="removed", previous=current, record=None)
        log = {"at": now, "event": why, "by": request.get("by", ""),
               "reason": request.get("reason", ""), "record": current}
        return True, None, answer, log
    raise ValueError(f"unknown operation {op!r}")


FREEZE_OPS = frozenset({"freeze_show", "freeze", "unfreeze"})


def decide_freeze(
    current: dict[str, Any] | None, request: dict[str, Any], now: float
) -> tuple[bool, dict[str, Any] | None, dict[str, Any], dict[str, Any] | None]:
    """One operation on the environment's freeze (None: not frozen) at ``now``; the same
    shape of result as :func:`decide`."""
    op = request.get("op")
    answer: dict[str, Any] = {"now": now, "record": current}
    if op == "freeze_show":
        answer["result"] = "shown"
        return False, current, answer, None
    if op == "freeze":
        if current is not None:
            answer["result"] = "already"
            return False, current, answer, None
        record = {"env": request.get("env", ""), "by": request.get("by", ""),
                  "reason": request.get("reason", ""), "at": now}
        answer.update(result="frozen", record=record)
        return True, record, answer, {"at": now, "event": "froze", "by": record["by"],
                                      "reason": record["reason"], "record": record}
    if op == "unfreeze":
        if current is None:
            answer["result"] = "absent"
            return False, None, answer, None
        answer.update(result="unfrozen", record=None, previous=current)
        return True, None, answer, {"at": now, "event": "unfroze", "by": request.get("by", ""),
                                    "reason": request.get("reason", ""), "record": current}
    raise ValueError(f"unknown operation {op!r}")


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict):
        return record
    # Not written by this program (it replaces the file whole): a holder nobody can name, whose
    # lease is over, so that the next deployment takes it over and the log keeps what it held.
    return {"env": os.path.basename(path)[: -len(".json")], "deployment": None, "owner": "?",
            "host": "?", "pid": 0, "pid_start": "", "acquired_at": 0.0, "expires_at": 0.0,
            "unreadable": text[:200]}


def _write(path: str, record: dict[str, Any] | None) -> None:
    if record is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _guard(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + GUARD_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                os.close(fd)
                raise
            time.sleep(0.02)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Do one operation on the lock files in ``request["dir"]``; the answer."""
    directory, env = request["dir"], request["env"]
    base = os.path.join(directory, env)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the lock directory {directory}: {exc.strerror}") from None
    fd = _guard(base + ".guard")
    freeze = request.get("op") in FREEZE_OPS
    path = base + (".freeze.json" if freeze else ".json")
    try:
        current = _read(path)
        changed, record, answer, log = (decide_freeze if freeze else decide)(
            current, request, time.time())
        if changed:
            _write(path, record)
        if request.get("op") == "renew":
            answer["freeze"] = _read(base + ".freeze.json")
        if log is not None:
            with open(base + ".log", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(log, sort_keys=True) + "\n")
        return answer
    finally:
        os.close(fd)  # closing the guard's descriptor releases the flock


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """:func:`run`, with a failure as an answer (``{"error": ...}``) rather than an exception."""
    try:
        return run(request)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "host": socket.gethostname()}


def main(argv: list[str]) -> int:
    sys.stdout.write(json.dumps(answer(json.loads(argv[1])), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
