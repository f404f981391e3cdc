"""The node state machine.

::

    pending -> staging -> staged -> draining -> deploying -> smoke -> rejoining -> done
       |                     |          \\___________\\__________\\____________\\
       +-> skipped           +-> skipped                                    v
                                                   reverting -> reverted | failed

A node counts as *out of the load balancer* from ``draining`` until it reaches ``done`` or
``reverted``; ``failed`` nodes may be out of service and are reported with the command to fix
them. Rolling back an already updated node goes ``done -> reverting -> reverted``. Without
pre-staging a node is staged and drained in one run: ``staging -> draining``.

A move this table does not allow is still followed and journalled by the engine, with a note
and a warning (an event was missing or came out of order): see ``Engine._move``.
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["OUT_OF_SERVICE", "NodePhase", "can_move", "updated_before", "updated_by_resumed"]


class NodePhase(StrEnum):
    PENDING = "pending"
    STAGING = "staging"
    STAGED = "staged"
    SKIPPED = "skipped"
    DRAINING = "draining"
    DEPLOYING = "deploying"
    SMOKE = "smoke"
    REJOINING = "rejoining"
    DONE = "done"
    REVERTING = "reverting"
    REVERTED = "reverted"
    FAILED = "failed"


P = NodePhase

_MOVES: dict[NodePhase, frozenset[NodePhase]] = {
    P.PENDING: frozenset({P.STAGING, P.STAGED, P.SKIPPED, P.DRAINING, P.FAILED}),
    # Without pre-staging, a batch's own run stages each node and then drains it.
    P.STAGING: frozenset({P.STAGED, P.DRAINING, P.FAILED, P.SKIPPED}),
    P.STAGED: frozenset({P.DRAINING, P.SKIPPED, P.FAILED}),
    P.DRAINING: frozenset({P.DEPLOYING, P.REVERTING, P.FAILED}),
    P.DEPLOYING: frozenset({P.SMOKE, P.REVERTING, P.FAILED}),
    P.SMOKE: frozenset({P.REJOINING, P.REVERTING, P.FAILED}),
    P.REJOINING: frozenset({P.DONE, P.REVERTING, P.FAILED}),
    P.DONE: frozenset({P.REVERTING}),
    P.REVERTING: frozenset({P.REVERTED, P.FAILED}),
    P.REVERTED: frozenset(),
    P.FAILED: frozenset({P.REVERTING}),
    P.SKIPPED: frozenset({P.REVERTING}),
}

OUT_OF_SERVICE = frozenset({P.DRAINING, P.DEPLOYING, P.SMOKE, P.REJOINING, P.REVERTING, P.FAILED})


def can_move(current: NodePhase, new: NodePhase) -> bool:
    return new in _MOVES[current]


# The words a resume that finishes a deployment adds to a node it skips because the deployment
# it resumes already updated it: the node runs the target; ``from`` is what a rollback of the
# resume puts back.
_UPDATED_BEFORE = re.compile(r"\(updated from \S+ by deployment \S+\)")


def updated_before(before: str, deployment: object) -> str:
    """Said of a node a resume skips because ``deployment`` already updated it from ``before``."""
    return f" (updated from {before} by deployment {deployment})"


def updated_by_resumed(detail: str) -> bool:
    """Whether a skipped node's detail says the resumed deployment had updated it."""
    return bool(_UPDATED_BEFORE.search(detail))
