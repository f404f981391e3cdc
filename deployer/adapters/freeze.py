"""An environment's emergency freeze ("stop the line"): kept beside its deployment lock, where
every controller and agent of the environment meets (the load balancer's host, or the state
directory), written atomically by the lock program under the same guard file
(:mod:`deployer.adapters._lock_program`: ``E.freeze.json``, and a line in ``E.log`` per freeze
and unfreeze).

- :class:`FreezeBoard`: what the gates and the CLI need (the Protocol);
- :class:`EnvironmentFreeze`: the freeze of one environment on a
  :class:`~deployer.adapters.lock.LockHost` (the lock's own host; the fake lock host in tests).

Reading it costs nothing at a deployment's safe points: the lock is confirmed there first (one
renewal), and the lock program's answer to a renewal carries the freeze, read under the same
guard; a read within a moment of that renewal uses it (:data:`FRESH`) instead of asking the
host again (over SSH, a new connection: about a quarter of a second). Admission, before the
lock is taken, asks the host (``fresh``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .._clock import iso_utc
from .lock import EnvironmentLock, LockHost

__all__ = ["FRESH", "EnvironmentFreeze", "FreezeBoard", "FreezeRecord"]

# Seconds a freeze read by a lock renewal stands for a fresh read (the renewal at a safe point
# comes just before the gates there).
FRESH = 2.0


@dataclass(frozen=True)
class FreezeRecord:
    """Who froze an environment, when (the lock host's clock) and why."""

    env: str
    by: str
    at: float
    reason: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreezeRecord:
        return cls(env=str(data.get("env", "")), by=str(data.get("by") or "?"),
                   at=float(data.get("at") or 0.0),
                   reason=str(data.get("reason") or "(the freeze record is unreadable)"))

    def describe(self) -> str:
        return f"frozen by {self.by} at {iso_utc(self.at)}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env, "by": self.by, "at": iso_utc(self.at), "reason": self.reason}


class FreezeBoard(Protocol):
    """An environment's emergency freeze."""

    env: str

    @property
    def where(self) -> str: ...

    def show(self, *, fresh: bool = False) -> FreezeRecord | None:
        """The freeze in force, if any (raises LockError when its host cannot be reached);
        ``fresh``: asked of the host now, not taken from the lock's last renewal."""
        ...

    def freeze(self, *, by: str, reason: str) -> tuple[FreezeRecord, bool]:
        """Freeze the environment; (the freeze in force, whether this call made it)."""
        ...

    def unfreeze(self, *, by: str, reason: str) -> FreezeRecord | None:
        """Lift the freeze; the freeze lifted (None: there was none)."""
        ...


class EnvironmentFreeze:
    """The freeze of one environment, kept on ``host`` beside its lock."""

    def __init__(self, host: LockHost, env: str, *, lock: EnvironmentLock | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.env = env
        # The environment's lock on the same host, whose renewals read the freeze too.
        self.lock = lock
        self._clock = clock

    @property
    def where(self) -> str:
        return f"{self.host.where}/{self.env}.freeze.json"

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.host.call({"op": op, "env": self.env, **fields})

    def show(self, *, fresh: bool = False) -> FreezeRecord | None:
        seen = self.lock.freeze_seen if self.lock is not None else None
        if not fresh and seen is not None and self._clock() - seen[0] <= FRESH:
            record = seen[1]
        else:
            record = self._call("freeze_show").get("record")
        return FreezeRecord.from_dict(record) if record else None

    def freeze(self, *, by: str, reason: str) -> tuple[FreezeRecord, bool]:
        answer = self._call("freeze", by=by, reason=reason)
        return FreezeRecord.from_dict(answer["record"]), answer["result"] == "frozen"

    def unfreeze(self, *, by: str, reason: str) -> FreezeRecord | None:
        previous = self._call("unfreeze", by=by, reason=reason).get("previous")
        return FreezeRecord.from_dict(previous) if previous else None
