"""Game days: rehearse every failure path of a release on demand, with real faults injected
under load at defined points of the lifecycle, the safe outcome checked, and a report someone
who was not there can read.

Where things are:

- ``_scenarios`` — the scenarios (:data:`SCENARIOS`): each one's fault, point, safe outcome,
  how it rehearses and how it is judged;
- ``_runner`` — :class:`GameDay` (the scenarios one after the other on an environment, each
  with its steady state checked before and after, under load) and :class:`Rehearsal` (one
  scenario's deployments, faults, kills and fixes);
- ``_points`` — where a fault goes in (:class:`Point`), and the subscriber that puts it there;
- ``_faults`` — the faults, each undoable from a record of it alone; ``_ledger`` — that record
  on the controller, so an interrupted game day's faults are undone by the next one or by
  ``deployer gameday cleanup``;
- ``_governance`` — what a rehearsal brings to the environment's governance gates (its own
  window or approvals, the clock the gates read: moved past a gate's time, never the
  machine's);
- ``_steady`` — the steady state and the journal's agreement with the live state;
- ``_load`` — bounded load through the load balancer; ``_report`` — the report.

A game day drives deployments through the engine's lifecycle and its events and reaches hosts
over SSH with the inventory's settings (paramiko), through the environment's governance gates;
it never changes the engine. It runs only on
an environment whose config allows it (``gameday: {allowed: true}``).
"""

from __future__ import annotations

from ._ledger import FaultLedger
from ._report import GameDayReport, ScenarioResult
from ._runner import GameDay, Rehearsal, check_allowed, cleanup, decide, select
from ._scenarios import SCENARIOS, Scenario
from ._wired import Wired, Wiring

__all__ = [
    "SCENARIOS",
    "FaultLedger",
    "GameDay",
    "GameDayReport",
    "Rehearsal",
    "Scenario",
    "ScenarioResult",
    "Wired",
    "Wiring",
    "check_allowed",
    "cleanup",
    "decide",
    "select",
]
