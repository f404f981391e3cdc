"""What a runner does at one look, from three readings: the pointer (what is asked), the fleet
(what runs) and its own last published status (what it acted on, and what it left running).

::

    no version in the pointer                        waiting
    the serving nodes all run the pointer's version  in sync: nothing to do, no history row
    a pointer value not acted on yet                 deploy it (a rollback when it is earlier
                                                     than what runs)
    acted on, and the fleet changed since            drift: published; deployed again only with
                                                     agent.correct_drift (and never a version
                                                     whose deployment failed)
    acted on, nothing changed since                  nothing: the outcome stands (write the
                                                     pointer again to retry a failed version)

Pure: no reading, no writing; the runner (:mod:`._runner`) does both.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..artefacts._stores import version_sort_key
from ._observe import Observed
from ._pointer import Desired
from ._status import AgentStatus

__all__ = ["Plan", "decide", "deployment_kind"]


@dataclass(frozen=True)
class Plan:
    """What to do: ``deploy`` (``kind``), ``publish`` (the decision, nothing deployed) or
    ``nothing`` (the last status still says it)."""

    action: str
    decision: str
    reason: str
    kind: str = "deploy"
    # The pointer's value counts as acted on once this plan is published.
    acts: bool = False


def deployment_kind(desired: str, running: str | None) -> str:
    """A version earlier than the one every serving node runs goes out as a rollback (on
    blue-green, one switch when the idle leg still holds it)."""
    if running and version_sort_key(desired) < version_sort_key(running):
        return "rollback"
    return "deploy"


def decide(desired: Desired | None, observed: Observed, last: AgentStatus | None, *,
           correct_drift: bool) -> Plan:
    if desired is None:
        return Plan("publish", "waiting", "the pointer names no version")
    running = observed.running
    if running == desired.version:
        return Plan("publish", "in_sync", f"{observed.describe()}, as the pointer asks",
                    acts=True)
    acted = last.acted if last is not None else None
    kind = deployment_kind(desired.version, running)
    if acted is None or acted.revision != desired.revision:
        return Plan("deploy", "deploy", f"the pointer asks for {desired.version}; "
                    f"{observed.describe()}", kind=kind)
    assert last is not None
    changed = observed.versions != last.versions
    if not changed and last.decision != "drift":
        outcome = last.last_deployment
        how = (f"its deployment {outcome.uid} ended {outcome.status}" if outcome is not None and
               outcome.revision == desired.revision else f"the last decision was {last.decision}")
        return Plan("nothing", last.decision,
                    f"{desired.version} was acted on ({how}); write the pointer again to retry")
    drift = (f"drift: the pointer asks for {desired.version}, {observed.describe()}"
             + (f" (the runner left {_left(last)})" if changed else ""))
    failed = (last.last_deployment is not None and last.last_deployment.revision == desired.revision
              and last.last_deployment.status != "succeeded")
    if correct_drift and not failed:
        return Plan("deploy", "drift", f"{drift}; correcting it (agent.correct_drift)", kind=kind)
    if correct_drift:
        drift += f"; not corrected: the deployment of {desired.version} failed"
    else:
        drift += "; not corrected (agent.correct_drift is false)"
    return Plan("publish", "drift", drift)


def _left(last: AgentStatus) -> str:
    if last.running:
        return f"every serving node on {last.running}"
    return ", ".join(f"{n} on {v or 'no release'}" for v, n in last.versions.items()) or "no nodes"
