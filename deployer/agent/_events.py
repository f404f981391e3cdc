"""The runner's own events, on the same wire as a deployment's (the same envelope: ``schema``,
``seq``, ``at``, ``type``, ``deployment``; see :mod:`deployer.engine.events`). ``deployer agent``
writes both kinds as JSON lines on stdout: its own (numbered in its own stream) and every event
of each deployment it runs. The README's table of agent events is held to
:data:`AGENT_EVENT_TYPES` by a test, as the deployment events' table is to ``EVENT_TYPES``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import IO, ClassVar

from ..engine.events import Event, JsonLinesWriter, Published

__all__ = [
    "AGENT_EVENT_TYPES",
    "AgentDecided",
    "AgentStarted",
    "AgentStopped",
    "PromotionRecorded",
    "SharedJsonLines",
    "StatusPublished",
]


@dataclass(frozen=True, kw_only=True)
class AgentStarted(Event):
    type: ClassVar[str] = "agent_started"
    env: str
    app: str
    agent: str
    pointer: str
    status: str
    interval_s: float
    jitter: float
    correct_drift: bool
    once: bool


@dataclass(frozen=True, kw_only=True)
class AgentDecided(Event):
    """What one look decided (see the status's ``decision``)."""

    type: ClassVar[str] = "agent_decision"
    decision: str
    reason: str
    desired: str | None
    revision: str
    running: str | None
    versions: dict[str, int] = field(default_factory=dict)
    kind: str = ""
    exit_code: int = 0


@dataclass(frozen=True, kw_only=True)
class StatusPublished(Event):
    """The status written beside the pointer (``ok`` false: it could not be, ``error`` says why)."""

    type: ClassVar[str] = "status_published"
    where: str
    decision: str
    ok: bool = True
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class PromotionRecorded(Event):
    """A signed promotion record published after a successful deployment (or why none was)."""

    type: ClassVar[str] = "promotion_recorded"
    version: str
    sha256: str
    where: str
    key_id: str
    checks: list[str] = field(default_factory=list)
    ok: bool = True
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class AgentStopped(Event):
    type: ClassVar[str] = "agent_stopped"
    reason: str
    exit_code: int


AGENT_EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls for cls in (AgentStarted, AgentDecided, StatusPublished, PromotionRecorded,
                              AgentStopped)
}


class SharedJsonLines:
    """JSON lines to one stream from several event streams (the runner's and each
    deployment's, whose subscribers write from threads of their own): a line at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        # Re-entrant: a signal handler in the thread that is writing a line may publish (SIGTERM's
        # "stopping"), and must not wait for itself.
        self._lock = threading.RLock()

    def subscriber(self) -> JsonLinesWriter:
        return _Locked(self._stream, self._lock)


class _Locked(JsonLinesWriter):
    def __init__(self, stream: IO[str], lock: threading.RLock) -> None:
        super().__init__(stream)
        self._lock = lock

    def on_event(self, published: Published) -> None:
        with self._lock:
            super().on_event(published)
