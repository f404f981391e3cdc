"""The controller's record of the faults a game day has in place: ``<state_dir>/gameday/
faults.json``, written (and synced) before each fault goes in and after it is undone.

A game day killed mid-scenario (SIGKILL, a lost runner) leaves its faults in place; their
records stay here, and the next ``deployer gameday run`` or ``deployer gameday cleanup`` undoes
them before anything else. One game day per state directory runs at a time (``lock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import DeployerError
from ._faults import Fault, Reach, fault_from_record

__all__ = ["Entry", "FaultLedger"]


@dataclass(frozen=True)
class Entry:
    """A fault in place (or maybe in place: recorded before it was injected)."""

    id: str
    env: str
    kind: str
    record: dict[str, Any]
    scenario: str
    injected_at: float
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "env": self.env, "kind": self.kind, "record": self.record,
                "scenario": self.scenario, "injected_at": self.injected_at, "pid": self.pid}

    @property
    def fault(self) -> Fault:
        return fault_from_record(self.kind, self.record)


class FaultLedger:
    """The faults in place on one controller (see the module documentation)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "gameday"
        self.path = self.dir / "faults.json"
        self._seq = 0

    def _read(self) -> list[Entry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise DeployerError(f"the game day's record of faults {self.path} cannot be read: {exc}",
                                hint="undo the faults it names by hand, then remove it") from None
        return [Entry(**entry) for entry in data.get("faults", [])]

    def _write(self, entries: list[Entry]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"faults": [e.to_dict() for e in entries]}, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the fault goes in
        os.replace(tmp, self.path)

    def entries(self, env: str | None = None) -> list[Entry]:
        return [e for e in self._read() if env is None or e.env == env]

    def add(self, env: str, fault: Fault, scenario: str) -> Entry:
        self._seq += 1
        entry = Entry(id=f"{os.getpid()}-{time.time_ns()}-{self._seq}", env=env, kind=fault.kind,
                      record=fault.record(), scenario=scenario, injected_at=time.time(),
                      pid=os.getpid())
        self._write([*self._read(), entry])
        return entry

    def update(self, entry: Entry, fault: Fault) -> Entry:
        """Keep what the fault learnt while going in (e.g. what a file held before)."""
        updated = Entry(**{**entry.to_dict(), "record": fault.record()})
        self._write([updated if e.id == entry.id else e for e in self._read()])
        return updated

    def remove(self, entry: Entry) -> None:
        self._write([e for e in self._read() if e.id != entry.id])

    def undo_all(self, reach: Reach, env: str) -> tuple[list[str], list[str]]:
        """Undo every fault recorded for ``env``, the newest first (a fault may have gone in
        over an earlier one): (what was undone, what could not be, and why)."""
        undone: list[str] = []
        failed: list[str] = []
        for entry in reversed(self.entries(env)):
            fault = entry.fault
            try:
                fault.undo(reach)
            except (DeployerError, OSError) as exc:
                failed.append(f"{fault.describe()}: {exc}")
                continue
            self.remove(entry)
            undone.append(f"{fault.describe()} (scenario {entry.scenario})")
        return undone, failed

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One game day at a time on this state directory."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise DeployerError(f"another game day runs on this controller ({holder})",
                                    hint="wait for it to end") from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
