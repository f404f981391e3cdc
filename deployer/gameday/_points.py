"""Where a fault goes in: a :class:`Point` of the deployment's lifecycle (a safe point, or an
event: a node entering a phase, a batch starting, a soak starting), and the :class:`Watch` that
hears the deployment's events and injects the fault there, before the deployment moves on.

A point matches events as they are on the wire (``--events``), so the same point works for a
deployment run in this process (the watch is one of its subscribers) and for one run by another
process whose events are read as JSON lines (a deployment the game day kills).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..engine.events import Published, Subscriber

__all__ = ["Point", "Watch", "reacts"]

_ORDINAL = {1: "first", 2: "second", 3: "third"}


@dataclass(frozen=True)
class Point:
    """Events of ``type`` whose fields equal ``fields``; the ``nth`` such event is the point."""

    type: str
    fields: tuple[tuple[str, Any], ...] = ()
    nth: int = 1
    label: str = ""

    @classmethod
    def safe_point(cls, point: str, index: int | None = None) -> Point:
        fields: tuple[tuple[str, Any], ...] = (("point", point),)
        if index is not None:
            fields += (("index", index),)
        return cls("safe_point", fields,
                   label=f"the safe point {point}" + (f" {index}" if index is not None else ""))

    @classmethod
    def node_phase(cls, phase: str, nth: int = 1) -> Point:
        return cls("node", (("phase", phase),), nth,
                   label=f"the {_ORDINAL.get(nth, f'{nth}th')} node entering `{phase}`")

    @classmethod
    def event(cls, type: str, label: str, **fields: Any) -> Point:
        return cls(type, tuple(fields.items()), label=label)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return event.get("type") == self.type and all(event.get(k) == v for k, v in self.fields)

    def describe(self) -> str:
        return self.label or f"the {self.type} event " + ", ".join(f"{k}={v}" for k, v in self.fields)


def reacts(event: Mapping[str, Any]) -> bool:
    """Whether an event is the deployment reacting to something wrong: a node failing, being
    reverted or left out, a soak failing, traffic switched back, a check stopping it, the lock
    lost, or the deployment ending other than in success."""
    kind = event.get("type")
    if kind == "node":
        return event.get("phase") in ("reverting", "reverted", "failed", "out_of_service")
    if kind == "soak_verdict":
        return event.get("outcome") == "failed" and not event.get("tolerated")
    if kind == "switch":
        return bool(event.get("back"))
    if kind == "check":
        return event.get("decision") in ("stop", "fail")
    if kind == "lock":
        return event.get("what") == "lost"
    if kind == "deployment_finished":
        return event.get("status") != "succeeded"
    return False


@dataclass
class Heard:
    """An event, and when it was heard (monotonic seconds)."""

    at: float
    event: dict[str, Any]


class Watch(Subscriber):
    """Hears every event of a deployment; at ``point`` (its first match) calls ``inject`` with
    the event, before the deployment moves on.

    Synchronous on purpose: a fault that is "at the safe point before batch 2" must be in place
    before batch 2 starts, so it cannot wait behind a queue as other subscribers do. The
    controller's own events (a safe point, a batch starting) hold the deployment until the fault
    is in; a node's phases are the play's, heard while it goes on: a fault that must be in place
    before a node is touched goes in at the start of its batch. An injection
    takes a fraction of a second (one SSH command, one nftables table, a file); one that fails is
    kept in ``inject_error`` and never raised into the deployment.
    """

    synchronous: ClassVar[bool] = True

    def __init__(
        self, point: Point | None = None, inject: Callable[[dict[str, Any]], None] | None = None,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.point = point
        self._inject = inject
        self.clock = clock
        self.heard: list[Heard] = []
        self.injected_at: float | None = None
        self.inject_error = ""
        self._matches = 0
        # Re-entrant: Ctrl-C's handler runs in the thread that may be injecting here, and asking
        # the deployment to stop publishes an event (a plain lock would deadlock the game day).
        self._lock = threading.RLock()
        self._injecting = False

    def on_event(self, published: Published) -> None:
        self.feed(published.to_dict())

    def feed(self, event: dict[str, Any]) -> bool:
        """Hear one event (as on the wire); True when it was the point (the fault went in)."""
        with self._lock:
            self.heard.append(Heard(self.clock(), event))
            if (self.point is None or self.injected_at is not None or self.inject_error
                    or self._injecting):
                return False
            if not self.point.matches(event):
                return False
            self._matches += 1
            if self._matches < self.point.nth:
                return False
            self._injecting = True
            try:
                if self._inject is not None:
                    self._inject(event)
            except Exception as exc:  # a fault that failed to go in is reported, not raised
                self.inject_error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
                return False
            finally:
                self._injecting = False
            self.injected_at = self.clock()
            return True

    def first_after(self, since: float, test: Callable[[Mapping[str, Any]], bool]) -> Heard | None:
        with self._lock:
            heard = list(self.heard)
        return next((h for h in heard if h.at >= since and test(h.event)), None)

    def events(self) -> list[Heard]:
        with self._lock:
            return list(self.heard)


@dataclass
class Timeline:
    """What happened in a scenario, each line with its time since the scenario started."""

    t0: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)

    def add(self, text: str, at: float | None = None) -> None:
        self.lines.append(((at if at is not None else time.monotonic()) - self.t0, text))

    def to_list(self) -> list[dict[str, Any]]:
        return [{"t": round(t, 2), "what": text} for t, text in sorted(self.lines, key=lambda x: x[0])]
