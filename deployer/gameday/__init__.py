"""Game days: rehearse every failure path of a release on demand, with real faults injected
under load at defined points of the lifecycle.

- ``_points`` — where a fault goes in (:class:`Point`), and the subscriber that puts it there;
- ``_faults`` — the faults, each undoable from a record of it alone; ``_ledger`` — that record
  on the controller, so an interrupted game day's faults are undone by the next one;
- ``_load`` — bounded load through the load balancer.
"""

from __future__ import annotations

from ._ledger import FaultLedger

__all__ = ["FaultLedger"]
