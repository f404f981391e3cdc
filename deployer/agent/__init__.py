"""An environment's own runner (``deployer agent``): the path to live is pulled, never pushed.

Each environment runs its runner on a host of its own, with a config that holds only that
environment (its credentials, the public keys it trusts). Whoever may deploy writes one value,
the version to run, to the environment's *pointer* (a file, an HTTP URL, an SSM parameter);
the runner reads it, checks the gates, deploys with the environment's strategy and publishes
its status beside the pointer. No environment reaches into another: a release moves on only
through the signed promotion records each one publishes (:mod:`deployer.promotion`).

- ``_pointer`` — the pointer seam (:class:`Pointer`) and what it asks (:class:`Desired`);
  ``_file``, ``_http``, ``_ssm`` — its implementations; ``_open`` — choosing one;
- ``_status`` — the status published beside the pointer (:class:`AgentStatus`);
- ``_observe`` — what the fleet runs, read from the nodes;
- ``_decide`` — what one look does (pure);
- ``_runner`` — the runner itself (:class:`Agent`): polling, deploying, recording, publishing;
- ``_events`` — its own events, on the deployments' wire.
"""

from __future__ import annotations

from ._decide import Plan, decide, deployment_kind
from ._events import (
    AGENT_EVENT_TYPES,
    AgentDecided,
    AgentStarted,
    AgentStopped,
    PromotionRecorded,
    SharedJsonLines,
    StatusPublished,
)
from ._file import FilePointer
from ._http import HttpPointer
from ._observe import Observed, observe
from ._open import open_pointer
from ._pointer import Desired, Pointer, PointerValue, desired_from, get_desired, set_desired
from ._runner import Agent, OpenEnvironment, Step, Wired
from ._ssm import SsmPointer
from ._status import DECISIONS, Acted, AgentStatus, LastDeployment

__all__ = [
    "AGENT_EVENT_TYPES",
    "DECISIONS",
    "Acted",
    "Agent",
    "AgentDecided",
    "AgentStarted",
    "AgentStatus",
    "AgentStopped",
    "Desired",
    "FilePointer",
    "HttpPointer",
    "LastDeployment",
    "Observed",
    "OpenEnvironment",
    "Plan",
    "Pointer",
    "PointerValue",
    "PromotionRecorded",
    "SharedJsonLines",
    "SsmPointer",
    "StatusPublished",
    "Step",
    "Wired",
    "decide",
    "deployment_kind",
    "desired_from",
    "get_desired",
    "observe",
    "open_pointer",
    "set_desired",
]
