"""What the gates do when a deployment ends: the change record is updated with the outcome,
and a High Risk deployment that did not succeed names who must decide what comes next."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from .._errors import DeployerError
from ..engine.events import DeploymentFinished, DeploymentStarted, Published, Subscriber
from .changes import ChangeProvider
from .checks import GateState

__all__ = ["ChangeOutcome", "HighRiskDecision", "deciders"]

# The change's close code for each way a deployment ends (others: a work note only, the change
# stays open: refused, paused, stopped and cancelled deployments have not finished it).
_CLOSE_CODES = {"succeeded": "successful", "failed": "unsuccessful", "rolled_back": "unsuccessful"}


def deciders(state: GateState) -> str:
    """Who decides after a High Risk deployment halts: the approvers of each High Risk role."""
    roles = state.config.high_risk.roles
    approvers = state.config.approvers
    parts = []
    for role in roles:
        names = [a.name for a in approvers if role in a.roles]
        parts.append(f"{role} ({', '.join(names) or 'nobody configured'})")
    return " and ".join(parts)


class ChangeOutcome(Subscriber):
    """Writes the deployment to its change record: a work note when it starts, and at the end
    the outcome (work notes; the close code and notes when it succeeded or failed)."""

    synchronous: ClassVar[bool] = True

    def __init__(self, state: GateState, provider: ChangeProvider, say: Callable[[str], None]) -> None:
        self.state = state
        self.provider = provider
        self.say = say
        self.updates: list[dict[str, str]] = []

    def _sys_id(self) -> str:
        if self.state.change is not None:
            return self.state.change.sys_id
        number = self.state.request.change
        record = self.provider.read(number) if number else None
        if record is not None:
            self.state.change = record
        return record.sys_id if record is not None else ""

    def on_event(self, published: Published) -> None:
        ev = published.event
        ref = published.deployment
        if ref is None or ref.id <= 0 or not self.state.request.change:
            return
        what = f"deployer deployment {ref.uid} ({ref.kind} {ref.version} to {ref.env})"
        fields: dict[str, str] = {}
        if isinstance(ev, DeploymentStarted) and ev.locked:
            fields["work_notes"] = f"{what} started by {ev.actor}: {ev.command}"
        elif isinstance(ev, DeploymentFinished):
            fields["work_notes"] = f"{what} ended {ev.status}: {ev.summary}"
            code = _CLOSE_CODES.get(ev.status)
            if code is not None:
                fields["close_code"] = code
                fields["close_notes"] = f"{what}: {ev.summary}"
        if not fields:
            return
        try:
            sys_id = self._sys_id()
            if not sys_id:
                self.say(f"warning: change {self.state.request.change} not found: its record was not "
                         "updated")
                return
            self.provider.update(sys_id, fields)
            self.updates.append(fields)
        except DeployerError as exc:
            self.say(f"warning: could not update change {self.state.request.change}: {exc}")


class HighRiskDecision(Subscriber):
    """A High Risk deployment that did not succeed halted where it was: say who decides."""

    synchronous: ClassVar[bool] = True

    def __init__(self, state: GateState, say: Callable[[str], None]) -> None:
        self.state = state
        self.say = say
        self.high_risk = ""

    def on_event(self, published: Published) -> None:
        ev = published.event
        if isinstance(ev, DeploymentStarted):
            self.high_risk = ev.high_risk if ev.locked else ""
        elif isinstance(ev, DeploymentFinished) and self.high_risk and ev.status not in (
                "succeeded", "refused"):
            env = published.deployment.env if published.deployment else ""
            self.say(f"High Risk ({self.high_risk}): halted with no automatic rollback or switch "
                     f"back. Who decides what comes next: {deciders(self.state)} — to go on, "
                     f"`deployer deploy --env {env} ...` again; to go back, `deployer rollback "
                     f"--env {env} --to VERSION`. Where each node and leg stands: {ev.summary}")
