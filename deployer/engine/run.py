"""One deployment while it runs, as its strategy sees it: which deployment, which release, the
event stream, the operator's stop and abort requests, and the safe points."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .._errors import DeployerError, DeploymentFailed
from .events import Event, EventStream, Note
from .model import DeploymentRef, Release, Resumption
from .safepoints import Decision, SafePoint, SafePoints, Verdict
from .soaking import Soaks

__all__ = ["Run", "Stopped"]


class Stopped(Exception):
    """Raised by :meth:`Run.safe_point` when a check stopped the deployment there."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict

    @property
    def error(self) -> DeployerError:
        assert self.verdict.error is not None
        return self.verdict.error


@dataclass
class Run:
    """The context of one deployment (or of a plan, which has no journal record: ``ref.id`` 0)."""

    ref: DeploymentRef
    release: Release
    events: EventStream
    safe_points: SafePoints
    env_name: str
    config_file: str = "config"
    soaks: Soaks | None = None
    # The operator's first Ctrl-C (stop at the next safe point) and second (abort now).
    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    # What the deployment is waiting for now, for the operator's stop message (e.g. a soak).
    waiting_for: str = ""
    # A ``resume``: what it continues (None for any other deployment).
    resume: Resumption | None = None
    # Why this deployment is High Risk ("" when it is not): on a failure it halts, with no
    # automatic rollback and no automatic switch back, and people decide what comes next.
    high_risk: str = ""

    @property
    def kind(self) -> str:
        return self.ref.kind

    @property
    def acts_as(self) -> str:
        """The kind whose policies apply: a resume acts as a rollback or as what it finishes."""
        return self.resume.acts_as if self.resume is not None else self.ref.kind

    @property
    def recorded(self) -> bool:
        return self.ref.id > 0

    def publish(self, event: Event) -> None:
        self.events.publish(event)

    def note(self, text: str, *, level: str = "info") -> None:
        self.events.publish(Note(text=text, level=level))

    def safe_point(
        self, point: SafePoint, *, label: str = "", index: int | None = None, changed: bool = False,
    ) -> None:
        """Reach ``point``: go on, raise :class:`Stopped` (end safely here), or raise
        :class:`DeploymentFailed` (fail here; the strategy rolls back per on_failure)."""
        verdict = self.safe_points.reach(point, self.ref, label=label, index=index, changed=changed,
                                         release=self.release)
        if verdict.decision is Decision.STOP:
            raise Stopped(verdict)
        if verdict.decision is Decision.FAIL:
            raise DeploymentFailed(f"{verdict.check}: {verdict.reason}", hint=verdict.hint or None)
