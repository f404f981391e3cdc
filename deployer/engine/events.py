"""A deployment's event stream: what happened, as typed events, to every subscriber.

Every phase change of the deployment, safe point, check verdict, batch, node phase change, soak
round (each rule's value and threshold), switch of live traffic, revert and the outcome is an
:class:`Event`. The lifecycle publishes them on one :class:`EventStream`; the journal, the
console and ``--events FILE|-`` are subscribers, and so will be notifications, metrics and
reports. On the wire (``--events``) each event is one JSON object per line::

    {"schema": 1, "seq": 7, "at": "2026-12-07T10:00:01.250Z", "type": "node",
     "deployment": {"id": 12, "uid": "01JEX...", "env": "prod", "kind": "deploy",
                    "version": "1.4.2"},
     "node": "web2", "phase": "draining", "from_version": "1.4.1", "to_version": "1.4.2",
     "detail": "", "out_of_lb_s": null}

``schema`` is :data:`SCHEMA_VERSION`: fields are only ever added within one schema version; a
removal or a change of meaning bumps it. The README lists every type and field.

Subscribers come in two kinds. *Synchronous* ones (the journal, which must have written a node's
phase before the node moves on) run inline, in order. Every other subscriber is *detached*: it
gets its events through a queue drained by a thread of its own, so a slow or failing subscriber
never delays a safe point; one that raises is reported once and then left out.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

from .model import DeploymentRef

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "BatchStarted",
    "CheckVerdictEvent",
    "DeploymentFinished",
    "DeploymentStarted",
    "Event",
    "EventStream",
    "JsonLinesWriter",
    "LegSmoked",
    "LockChanged",
    "NodePhaseChanged",
    "Note",
    "PhaseEntered",
    "PlanMade",
    "Published",
    "SafePointReached",
    "SoakJudged",
    "SoakRound",
    "SoakSmoke",
    "SoakStarted",
    "Subscriber",
    "TrafficSwitched",
]

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened in a deployment; ``type`` names it on the wire."""

    type: ClassVar[str] = "event"

    def data(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class DeploymentStarted(Event):
    """The deployment is recorded in the journal and holds the lock (``locked`` False: it was
    refused before taking it, and its ``deployment_finished`` follows)."""

    type: ClassVar[str] = "deployment_started"
    app: str
    strategy: str
    actor: str
    command: str
    sha256: str = ""
    # The deployment this one continues (resume), by its uid.
    resumes: str | None = None
    locked: bool = True
    # The key that signed the release (its minisign key id), when it was verified.
    key_id: str = ""
    # Why the deployment is High Risk (no automatic rollback or switch back); "" when it is not.
    high_risk: str = ""


@dataclass(frozen=True, kw_only=True)
class PhaseEntered(Event):
    """The lifecycle moved on: preflight → plan → steps → outcome."""

    type: ClassVar[str] = "phase"
    phase: str


@dataclass(frozen=True, kw_only=True)
class PlanMade(Event):
    """The plan, computed once (``deployer plan`` shows the same)."""

    type: ClassVar[str] = "plan"
    plan: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SafePointReached(Event):
    """Every node is in service or deliberately idle, none half-done; checks run now."""

    type: ClassVar[str] = "safe_point"
    point: str
    label: str = ""
    index: int | None = None


@dataclass(frozen=True, kw_only=True)
class CheckVerdictEvent(Event):
    """What one check registered at a safe point decided (continue, stop or fail)."""

    type: ClassVar[str] = "check"
    point: str
    check: str
    decision: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class BatchStarted(Event):
    type: ClassVar[str] = "batch"
    index: int
    total: int
    nodes: list[str]
    canary: bool = False
    rollback: bool = False
    leg: str | None = None


@dataclass(frozen=True, kw_only=True)
class NodePhaseChanged(Event):
    """A node moved in the node state machine (see :mod:`deployer.engine.states`)."""

    type: ClassVar[str] = "node"
    node: str
    phase: str
    from_version: str = ""
    to_version: str = ""
    detail: str = ""
    out_of_lb_s: float | None = None
    leg: str | None = None


@dataclass(frozen=True, kw_only=True)
class SoakStarted(Event):
    type: ClassVar[str] = "soak_started"
    scope: str
    servers: list[str]
    baseline: list[str] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SoakRound(Event):
    """One round of the soak's rules: each rule's indicator, value, threshold and status."""

    type: ClassVar[str] = "soak_round"
    scope: str
    round: int
    results: list[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class SoakSmoke(Event):
    """One run of a further smoke test during the soak."""

    type: ClassVar[str] = "soak_smoke"
    scope: str
    result: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class SoakJudged(Event):
    """A soak's verdict. ``subject`` is who it judged, as the journal records it (``analysis``
    for a rolling soak, ``<leg> leg`` for blue-green)."""

    type: ClassVar[str] = "soak_verdict"
    scope: str
    subject: str
    outcome: str
    line: str
    verdict: dict[str, Any]
    # The soak's breach did not stop the deployment (a rollback goes on: see on_rollback).
    tolerated: bool = False


@dataclass(frozen=True, kw_only=True)
class LegSmoked(Event):
    """A blue-green leg smoke-tested as a whole through the preview route."""

    type: ClassVar[str] = "leg_smoke"
    leg: str
    url: str
    requests: int
    ok: bool
    problem: str = ""


@dataclass(frozen=True, kw_only=True)
class TrafficSwitched(Event):
    """Live traffic moved between blue-green legs, in one load-balancer operation."""

    type: ClassVar[str] = "switch"
    from_leg: str
    to_leg: str
    back: bool
    seconds: float
    where: str = ""


@dataclass(frozen=True, kw_only=True)
class LockChanged(Event):
    """The deployment lock: ``taken_over`` from a dead holder, ``lost``, or ``released``."""

    type: ClassVar[str] = "lock"
    what: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Note(Event):
    """A line for the operator (``level``: info or warning)."""

    type: ClassVar[str] = "message"
    text: str
    level: str = "info"


@dataclass(frozen=True, kw_only=True)
class DeploymentFinished(Event):
    type: ClassVar[str] = "deployment_finished"
    status: str
    summary: str
    exit_code: int
    duration_s: float
    out_of_service: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)
    hint: str = ""
    warnings: list[str] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (
        DeploymentStarted, PhaseEntered, PlanMade, SafePointReached, CheckVerdictEvent,
        BatchStarted, NodePhaseChanged, SoakStarted, SoakRound, SoakSmoke, SoakJudged,
        LegSmoked, TrafficSwitched, LockChanged, Note, DeploymentFinished,
    )
}


def _iso_ms(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class Published:
    """An event as delivered: numbered in its stream, stamped, with its deployment."""

    seq: int
    at: float
    deployment: DeploymentRef | None
    event: Event

    @property
    def type(self) -> str:
        return self.event.type

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION, "seq": self.seq, "at": _iso_ms(self.at), "type": self.type,
            "deployment": self.deployment.to_dict() if self.deployment else None,
            **self.event.data(),
        }


class Subscriber:
    """Hears a deployment's events; the base class ignores them all (subclass and override).
    ``synchronous`` subscribers run inline and may hold the deployment up (the journal only)."""

    synchronous: ClassVar[bool] = False

    def on_event(self, published: Published) -> None:
        pass

    def close(self) -> None:
        """The stream ends: flush what is buffered."""


class _Detached:
    """A subscriber behind a queue and a thread of its own."""

    _END = object()

    def __init__(self, subscriber: Subscriber, on_error: Callable[[Subscriber, BaseException], None]) -> None:
        self.subscriber = subscriber
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._on_error = on_error
        self._failed = False
        self._thread = threading.Thread(
            target=self._drain, name=f"events-{type(subscriber).__name__}", daemon=True
        )
        self._thread.start()

    def put(self, published: Published) -> None:
        if not self._failed:
            self._queue.put(published)

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if self._failed:
                continue
            assert isinstance(item, Published)
            try:
                self.subscriber.on_event(item)
            except BaseException as exc:  # never let a subscriber end the deployment
                self._failed = True
                self._on_error(self.subscriber, exc)

    def close(self, timeout: float) -> None:
        self._queue.put(self._END)
        self._thread.join(timeout)
        try:
            self.subscriber.close()
        except Exception as exc:
            self._on_error(self.subscriber, exc)


class EventStream:
    """Publishes events to subscribers; see the module documentation."""

    def __init__(
        self, subscribers: Iterable[Subscriber] = (), *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._seq = 0
        # Re-entrant: an inline subscriber may publish while it hears an event.
        self._mutex = threading.RLock()
        self._inline: list[Subscriber] = []
        self._detached: list[_Detached] = []
        self.deployment: DeploymentRef | None = None
        self.errors: list[str] = []
        for subscriber in subscribers:
            self.subscribe(subscriber)

    def subscribe(self, subscriber: Subscriber) -> None:
        if subscriber.synchronous:
            self._inline.append(subscriber)
        else:
            self._detached.append(_Detached(subscriber, self._failed))

    def _failed(self, subscriber: Subscriber, exc: BaseException) -> None:
        self.errors.append(f"{type(subscriber).__name__}: {exc}")

    def publish(self, event: Event) -> Published:
        """Deliver ``event`` to every subscriber (inline ones before this returns)."""
        with self._mutex:
            self._seq += 1
            published = Published(self._seq, self._clock(), self.deployment, event)
            # Inline subscribers hear events in order, under the stream's mutex: threads of
            # the soak publish too.
            for subscriber in self._inline:
                subscriber.on_event(published)
            for detached in self._detached:
                detached.put(published)
        return published

    def close(self, timeout: float = 5.0) -> None:
        """Let detached subscribers finish what they have (at most ``timeout`` seconds each)."""
        detached, self._detached = self._detached, []
        for d in detached:
            d.close(timeout)
        for subscriber in self._inline:
            subscriber.close()


class JsonLinesWriter(Subscriber):
    """``--events``: one JSON object per event and line, flushed as it is written."""

    def __init__(self, stream: IO[str], *, close_stream: bool = False) -> None:
        self._stream = stream
        self._close_stream = close_stream

    def on_event(self, published: Published) -> None:
        self._stream.write(json.dumps(published.to_dict(), sort_keys=True, default=str) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._close_stream:
            self._stream.close()
