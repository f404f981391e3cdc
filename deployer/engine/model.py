"""The values a deployment passes around: the release, what a node said about itself, each
node's place in this deployment, and the outcome.

Nothing here does any work; every module of the engine, the CLI and the subscribers of a
deployment's events read these types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._errors import DeployerError
from ..adapters.inventory import Node
from .states import NodePhase

__all__ = [
    "DeploymentRef",
    "NodeFacts",
    "NodeStatus",
    "Outcome",
    "Release",
    "Resumption",
    "StoreVerifier",
]

P = NodePhase


@dataclass(frozen=True)
class Release:
    """A verified release: what nodes download and the digest they check."""

    app: str
    version: str
    url: str
    sha256: str
    size: int
    # The key that signed it (minisign key id), when the store's verification said.
    key_id: str = ""
    # Why the release has no rollback path, as its manifest declares (an irreversible data
    # migration); "" for a release that can be rolled back. Such a release is High Risk.
    irreversible: str = ""


StoreVerifier = Callable[[str], Release]


@dataclass(frozen=True)
class DeploymentRef:
    """One deployment as the world names it: its number in this controller's journal and its
    globally unique id (a ULID), the same in events, published status and evidence."""

    id: int
    uid: str
    env: str
    kind: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "uid": self.uid, "env": self.env, "kind": self.kind,
                "version": self.version}


@dataclass(frozen=True)
class Resumption:
    """What a ``resume`` deployment continues, as its strategy needs it (see
    :mod:`deployer.engine.resume`, which decides it from the journal and the live fleet)."""

    # The interrupted deployment: its uid, number, kind and the release it was putting on.
    uid: str
    deployment: int
    kind: str
    version: str
    # rollback: back to the releases the nodes had; finish: on to ``version``.
    mode: str
    # What each node ran before the interrupted deployment ("" for nothing: a first release).
    from_versions: dict[str, str] = field(default_factory=dict)
    # Rolling, rollback: the nodes rolled back (those that ran this resume's release before);
    # the others are kept on what they run, and put back into service when deployer left them
    # out. None: every node is in scope.
    scope: frozenset[str] | None = None
    # Blue-green: where the path picks up (release | soak | uplift | switch_back | revert |
    # done), the leg being released (the idle leg, or the old one during an uplift) and the
    # other one.
    entry: str = ""
    candidate: str = ""
    fallback: str = ""
    # Blue-green: the interrupted deployment was uplifting the old leg (after a good soak).
    uplift: bool = False

    @property
    def acts_as(self) -> str:
        """The kind whose policies apply (soak, on_failure, a tolerated breach): rolling back is
        a rollback; finishing is what it finishes."""
        return "rollback" if self.mode == "rollback" else self.kind


@dataclass
class NodeFacts:
    """What one node said about itself when read: its releases and health."""

    current: str = ""
    previous: str = ""
    healthy: bool | None = None
    health_detail: str = ""
    # Why the node could not be reached (ssh's own words), when it could not.
    unreachable_reason: str = ""
    # Whether the node runs a hook around its activation (pre-staging says, for the whole fleet;
    # not known counts as yes, so a rollout never leaves out a hook it was not told about).
    activation_hooks: bool = True

    @property
    def unreachable(self) -> bool:
        return self.health_detail == "unreachable"


@dataclass
class NodeStatus:
    """One node's place in a deployment (its phase moves through :mod:`.states`)."""

    node: Node
    phase: NodePhase = P.PENDING
    from_version: str = ""
    to_version: str = ""
    detail: str = ""
    unreachable: bool = False
    out_since: float | None = None
    out_seconds: float | None = None
    outcome_fact: str = ""
    # The first failure reported for this node: the root cause, not the cleanup's echo of it.
    cause: str = ""
    # The blue-green leg the node belongs to, if any.
    leg: str | None = None
    # Sessions still open when load_balancer.drain_timeout ran out (summed over the load
    # balancers): the node was taken out anyway, and its restart cut them.
    sessions_cut: int = 0

    @property
    def name(self) -> str:
        return self.node.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value, "from": self.from_version, "to": self.to_version,
            "detail": self.detail,
            "out_of_lb_s": None if self.out_seconds is None else round(self.out_seconds, 3),
            **({"leg": self.leg} if self.leg else {}),
            **({"sessions_cut": self.sessions_cut} if self.sessions_cut else {}),
        }


@dataclass
class Outcome:
    """How a deployment ended."""

    deployment_id: int
    kind: str
    version: str
    # succeeded | failed | rolled_back | cancelled | refused | stopped
    status: str
    nodes: dict[str, NodeStatus]
    summary: str
    plan: Any = None
    out_of_service: list[str] = field(default_factory=list)
    fix_commands: list[str] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    # Nodes someone else took out of the load balancer, left as they were (one line each).
    left_alone: list[str] = field(default_factory=list)
    # What to do next when the deployment was refused or failed.
    hint: str = ""
    # What a strategy adds (blue-green: the legs, the switches, the soak's verdict).
    details: dict[str, Any] = field(default_factory=dict)
    # The globally unique id of the deployment (see DeploymentRef).
    uid: str = ""
    # Things the operator should know although the deployment did what it was asked.
    warnings: list[str] = field(default_factory=list)
    # What ends a deployment a check stopped at a safe point (its exit code, its message).
    stop_error: DeployerError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.details,
            "deployment": self.deployment_id,
            "uid": self.uid,
            "kind": self.kind,
            "version": self.version,
            "status": self.status,
            "summary": self.summary,
            "duration_s": round(self.ended - self.started, 3),
            "out_of_service": self.out_of_service,
            "fix": self.fix_commands,
            "left_alone": self.left_alone,
            "hint": self.hint or None,
            "warnings": self.warnings,
            "nodes": {n: s.to_dict() for n, s in self.nodes.items()},
        }
