"""What a rehearsal brings to the environment's governance gates: its request (the game day's
own requester and approvals, when a scenario needs them), the gates' settings it sets for itself
(a window of its own, approvals by the game day's keys), and the clock the gates read.

A window closing or an approval expiring is rehearsed by moving :class:`GatesClock`, the time
the checks at the lifecycle's safe points are told, to the window's end or past the approval's
expiry at the scenario's point: the gates, the pause or rollback, and ``resume`` are the real
ones; only the wait for the wall clock is skipped. The controller's own clock is never touched.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..artefacts import generate_keypair
from ..config import (
    DAYS,
    ApprovalsConfig,
    ApproverConfig,
    GatesConfig,
    RequesterConfig,
    WindowConfig,
)
from ..gates import GateRequest
from ..gates.approvals import Approval, approval_of, make_approval, requester_from_key
from ..gates.calendar import Calendar

__all__ = ["GameDayKeys", "GatesClock", "RehearsalGates", "open_window", "with_approvals"]

# The role the game day's approver holds (the approvals it sets for a rehearsal ask for it).
ROLE = "change"
# How long the window a rehearsal sets for itself stays open (it opened a minute before).
WINDOW_MINUTES = 60


class GatesClock:
    """The time the gates are told: the wall clock, moved by a scenario (then put back)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def move_to(self, when: float) -> None:
        self.offset = when - time.time()

    def reset(self) -> None:
        self.offset = 0.0


@dataclass
class RehearsalGates:
    """The gates as one rehearsal meets them: ``config`` (None: the environment's own), what
    its deployments bring (``request``), and the clock the gates read."""

    config: GatesConfig | None = None
    request: GateRequest = field(default_factory=GateRequest)
    clock: GatesClock = field(default_factory=GatesClock)


def open_window(gates: GatesConfig, now: float) -> tuple[GatesConfig, float]:
    """``gates`` with one release window of the rehearsal's own instead of the environment's
    windows and calendar freezes: every day, in UTC, open from the minute before ``now`` for an
    hour, binding deployments; and the instant that window closes."""
    opens = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0) \
        - dt.timedelta(minutes=1)
    closes = opens + dt.timedelta(minutes=WINDOW_MINUTES)
    window = WindowConfig.model_validate(
        {"days": list(DAYS), "from": f"{opens:%H:%M}", "to": f"{closes:%H:%M}", "tz": "UTC"})
    applies = list(dict.fromkeys([*gates.windows_apply_to, "deploy"]))
    config = gates.model_copy(update={"windows": [window], "freezes": [],
                                      "windows_apply_to": applies})
    occurrence = Calendar.of(config).window_at(now)
    assert occurrence is not None, "a window from the minute before now is open now"
    return config, occurrence.closes


@dataclass(frozen=True)
class GameDayKeys:
    """The game day's own requester and approver (minisign key pairs in its work directory,
    made on first use): a rehearsal that needs approvals asks with one and approves with the
    other, so four eyes holds."""

    dir: Path

    @property
    def requester(self) -> Path:
        return self._pair("gameday-requester")

    @property
    def approver(self) -> Path:
        return self._pair("gameday-approver")

    def _pair(self, name: str) -> Path:
        secret = self.dir / f"{name}.key"
        if not secret.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            generate_keypair(self.dir, name, force=True)
        return secret

    def approve(self, *, app: str, version: str, sha256: str, environment: str, expires: float,
                now: float) -> Approval:
        """An approval of the release by the game day's approver, until ``expires``."""
        document, _ = make_approval(
            key_path=self.approver, app=app, version=version, sha256=sha256,
            environment=environment, change=None, expires=expires, high_risk=False,
            break_glass=False, requester=None, now=now)
        return approval_of(document, "the game day's approval")

    def request(self, approvals: tuple[Approval, ...]) -> GateRequest:
        """A request by the game day's requester, bringing ``approvals``."""
        requester, secret = requester_from_key(self.requester, {})
        return GateRequest(approvals=approvals, requester=requester, requester_secret=secret)


def with_approvals(gates: GatesConfig, keys: GameDayKeys) -> GatesConfig:
    """``gates`` asking every deployment for one signed approval by the game day's approver
    (requested by the game day's requester), with no windows or calendar freezes: the approval
    is the only gate whose time runs out."""
    approvals = ApprovalsConfig(
        provider="signed", required_for=["deploy"], min_approvals=1, role=ROLE,
        approvers=[ApproverConfig(name="game day approver", key=keys.approver.with_suffix(".pub"),
                                  roles=[ROLE])],
        requesters=[RequesterConfig(name="game day", key=keys.requester.with_suffix(".pub"))])
    return gates.model_copy(update={"approvals": approvals, "change_api": None, "windows": [],
                                    "freezes": []})
