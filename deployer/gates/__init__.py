"""Governance gates: what a deployment must pass besides its own checks, and the evidence
record every deployment leaves.

The gates plug into the engine without changing it: each is a check at the lifecycle's safe
points (:class:`~deployer.engine.Check`; asked at ``admission``, before the lock, and at every
safe point after), and what they do at the end listens to the deployment's events
(:class:`~deployer.engine.Subscriber`). One ``gates:`` section per environment configures
them (:class:`~deployer.config.GatesConfig`).

- ``calendar`` — release windows and calendar freezes as instants (time zones, daylight
  saving, windows across midnight);
- ``approvals`` — signed approvals (an approver's minisign key signs app, version, digest,
  environment, change, expiry) and the requester's signed request; four eyes by key;
- ``changes`` — change records in a change-management system: the seam
  (:class:`~deployer.gates.changes.ChangeProvider`) and a ServiceNow-style Table API client;
- ``decisions`` — whether a strategy can deploy with zero downtime (else a decision record);
- ``checks`` — the gates themselves (one check each) and what a window closing does;
- ``outcome`` — the change record updated with the outcome; who decides after a High Risk
  deployment halts;
- ``evidence`` — the evidence record: collected from the events, signed, kept in the journal
  and published to the store;
- the emergency freeze lives beside the lock (:mod:`deployer.adapters.freeze`).

:func:`build_gates` puts them together for one environment and one request; the CLI's wiring
calls it (the one place concrete adapters are chosen).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..adapters.freeze import FreezeBoard
from ..adapters.journal import Journal
from ..artefacts import ArtefactStore, load_public_key
from ..config import EnvironmentConfig
from ..engine.events import Subscriber
from ..engine.safepoints import Check
from .approvals import Approvers
from .calendar import Calendar
from .changes import ChangeProvider
from .checks import (
    ApprovalGate,
    BreakGlassGate,
    CalendarFreezeGate,
    ChangeGate,
    DecisionRecordGate,
    FreezeGate,
    GateRequest,
    GateState,
    HighRiskGate,
    RequesterGate,
    WindowGate,
)
from .decisions import zero_downtime_gaps
from .evidence import EvidenceCollector, EvidenceSigner
from .outcome import ChangeOutcome, HighRiskDecision

__all__ = ["GateRequest", "GateState", "Gates", "build_gates"]


@dataclass
class Gates:
    """One environment's gates for one request: the checks for the lifecycle, and the
    subscribers for the deployment's events (empty for a command that only plans)."""

    state: GateState
    checks: list[Check]
    subscribers: list[Subscriber] = field(default_factory=list)
    evidence: EvidenceCollector | None = None
    change_outcome: ChangeOutcome | None = None


def build_gates(
    *, env_name: str, env: EnvironmentConfig, journal: Journal, freeze: FreezeBoard,
    request: GateRequest, nodes: Mapping[str, str | None], group_sizes: Mapping[str, int],
    actor: str, config_file: str = "config", change_provider: ChangeProvider | None = None,
    store: Callable[[], ArtefactStore] | None = None, signer: EvidenceSigner | None = None,
    say: Callable[[str], None] = lambda text: None, deploying: bool = True,
    clock: Callable[[], float] = time.time,
) -> Gates:
    """The gates of ``env`` for ``request``. ``nodes``: every node and its leg; ``group_sizes``:
    how many nodes each group holds (for the zero-downtime judgement); ``deploying``: also the
    subscribers (evidence, the change's outcome), for a command that deploys."""
    config = env.gates
    state = GateState(env_name=env_name, config=config, request=request)
    approvers = Approvers.of(config.approvals)
    calendar = Calendar.of(config)
    checks: list[Check] = [
        FreezeGate(state, freeze),
        DecisionRecordGate(state, zero_downtime_gaps(env, group_sizes), config.decision_record,
                           config_file),
        RequesterGate(state, actor, clock, requesters=[
            (r.name, load_public_key(r.key))
            for r in (config.approvals.requesters if config.approvals is not None else [])]),
        BreakGlassGate(state, approvers),
        HighRiskGate(state, approvers),
        WindowGate(state, calendar, journal),
        CalendarFreezeGate(state, calendar, journal),
    ]
    provider = change_provider
    if config.approvals is not None:
        if config.approvals.provider == "change_api":
            assert provider is not None, "the change_api provider needs a ChangeProvider"
            checks.append(ChangeGate(state, provider))
        else:
            checks.append(ApprovalGate(state, approvers))
    gates = Gates(state, checks)
    if not deploying:
        return gates
    gates.evidence = EvidenceCollector(state=state, env=env, journal=journal, signer=signer,
                                       store=store, nodes=dict(nodes), say=say)
    gates.subscribers = [gates.evidence, HighRiskDecision(state, say)]
    if provider is not None and config.approvals is not None and config.approvals.provider == "change_api":
        gates.change_outcome = ChangeOutcome(state, provider, say)
        gates.subscribers.append(gates.change_outcome)
    return gates
