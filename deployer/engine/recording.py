"""The journal as a subscriber of a deployment's events: every node phase change, soak verdict,
switch of live traffic, leg smoke test, lock change and check that stopped the deployment is
written as it happens (synchronously: a node's phase is on disk before the node moves on), in
the journal's rows as ``history --deployment ID`` shows them."""

from __future__ import annotations

from typing import ClassVar

from ..adapters.journal import Journal
from .events import (
    CheckVerdictEvent,
    LegSmoked,
    LockChanged,
    NodePhaseChanged,
    PlanMade,
    Published,
    SoakJudged,
    Subscriber,
    TrafficSwitched,
)

__all__ = ["JournalRecorder"]


class JournalRecorder(Subscriber):
    """Writes a deployment's events into its journal rows."""

    synchronous: ClassVar[bool] = True

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def on_event(self, published: Published) -> None:
        dep = published.deployment
        if dep is None or dep.id <= 0:
            return  # not a recorded deployment (a plan)
        ev = published.event
        record = self.journal.record_phase
        if isinstance(ev, NodePhaseChanged):
            record(dep.id, ev.node, ev.phase, from_version=ev.from_version, to_version=ev.to_version,
                   detail=ev.detail)
        elif isinstance(ev, SoakJudged):
            phase = "soak_failed" if ev.outcome == "failed" else "soaked"
            record(dep.id, ev.subject, phase, to_version=dep.version, detail=f"{ev.scope}: {ev.line}"
                   if ev.scope else ev.line)
            self.journal.update_details(dep.id, analysis=ev.verdict)
        elif isinstance(ev, TrafficSwitched):
            what = "switched back" if ev.back else "switched"
            record(dep.id, "live traffic", "switched_back" if ev.back else "switched",
                   to_version=dep.version,
                   detail=f"live traffic {what} from {ev.from_leg} to {ev.to_leg} in one operation"
                   + (f" on {ev.where}" if ev.where else ""))
        elif isinstance(ev, LegSmoked):
            record(dep.id, f"{ev.leg} leg", "smoke" if ev.ok else "failed", to_version=dep.version,
                   detail=f"{ev.requests} requests through the preview route {ev.url}: all healthy"
                   if ev.ok else f"preview smoke {ev.url}: {ev.problem}")
        elif isinstance(ev, LockChanged) and ev.what != "released":
            record(dep.id, "lock", ev.what, detail=ev.detail)
        elif isinstance(ev, CheckVerdictEvent) and ev.decision != "continue" and ev.check != "lock":
            record(dep.id, f"check {ev.check}", ev.decision, detail=f"at {ev.point}: {ev.reason}")
        elif isinstance(ev, PlanMade):
            self.journal.update_details(dep.id, plan=ev.plan)
