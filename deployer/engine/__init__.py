"""The engine: one lifecycle for every deployment, and the strategies that fill it in.

Where things are (each module does one thing):

- ``lifecycle`` — :class:`Lifecycle`: verify → lock → preflight → plan → steps → outcome, the
  same for every strategy; ``raise_for`` / ``exit_code_for`` turn an outcome into an exit;
- ``strategy`` — the interface a strategy implements (:class:`Strategy`, :class:`Execution`);
  ``rolling`` and ``bluegreen`` — the two strategies;
- ``safepoints`` — the named safe points and the checks asked there (the operator's stop, the
  lock, and gates at ``admission``, such as :mod:`deployer.promotion`'s; release windows and
  approvals plug in the same way); ``run`` — a deployment as a strategy sees it;
- ``events`` — the typed event stream and its subscribers; ``recording`` — the journal as one;
- ``plan`` — the plan as data, and the rolling batches under the capacity floor;
- ``fleet`` — reading nodes and the load balancer, and the guards around them;
- ``rollout`` — putting a release on nodes and taking it off (batches, reverts, rollbacks);
- ``tracking`` and ``states`` — each node's phase, and the state machine it moves in;
- ``soaking`` — soak analysis inside a deployment; ``history`` — what ``rollback`` goes back
  to; ``recovery`` — ``recover``; ``resume`` — ``resume``: which deployment was interrupted,
  and rolling it back or finishing it; ``left_out`` — who left a node out;
- ``variables`` — what the playbooks are given; ``model`` — the values passed around.
"""

from __future__ import annotations

from .events import EventStream, JsonLinesWriter, Published, Subscriber
from .lifecycle import Lifecycle, exit_code_for, raise_for
from .model import DeploymentRef, NodeFacts, NodeStatus, Outcome, Release
from .plan import DeploymentPlan
from .safepoints import Check, Decision, SafePoint, SafePointContext, Verdict

__all__ = [
    "Check",
    "Decision",
    "DeploymentPlan",
    "DeploymentRef",
    "EventStream",
    "JsonLinesWriter",
    "Lifecycle",
    "NodeFacts",
    "NodeStatus",
    "Outcome",
    "Published",
    "Release",
    "SafePoint",
    "SafePointContext",
    "Subscriber",
    "Verdict",
    "exit_code_for",
    "raise_for",
]
