"""The status a runner publishes beside its pointer after every decision, so that whoever wrote
the pointer sees the result without any access to the fleet (``deployer pointer get``)::

    {"schema": 1, "env": "prod", "app": "hello", "decision": "deployed", "reason": "...",
     "desired": {"version": "1.4.2", "reason": "...", "requester": "...", "set_at": "...",
                 "revision": "7"},
     "running": "1.4.2", "versions": {"1.4.2": 4},
     "acted": {"revision": "7", "version": "1.4.2"},
     "last_deployment": {"uid": "01JEX...", "id": 41, "kind": "deploy", "version": "1.4.2",
                         "status": "succeeded", "exit_code": 0, "summary": "...",
                         "at": "...", "revision": "7"},
     "deployment": "01JEX...", "promotion": {"where": "s3://...", "key_id": "..."},
     "exit_code": 0, "at": "2026-12-07T10:05:00Z", "agent": "deployer@runner1 pid 812"}

``decision`` is one of :data:`DECISIONS`. ``acted`` is the pointer value the runner has acted
on: it is not deployed again until the pointer is written again (a new revision).
``versions`` counts the serving nodes per release (the live leg of a blue-green fleet);
``running`` is the one release they all run, or null. The text stays small (an SSM standard
parameter holds 4 KB): long reasons and summaries are cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from ._pointer import Desired

__all__ = ["DECISIONS", "STATUS_SCHEMA", "Acted", "AgentStatus", "LastDeployment"]

STATUS_SCHEMA = 1
DECISIONS = {
    "deployed": "a deployment of the pointer's version succeeded",
    "failed": "a deployment ran and did not succeed (rolled back, reverted or halted)",
    "stopped": "a deployment stopped at a safe point (the runner was stopped, or lost its lock)",
    "refused": "refused, nothing changed: a gate, the release, the pointer's value or the fleet",
    "busy": "another controller holds the environment's lock: tried again later",
    "in_sync": "the fleet runs the pointer's version",
    "drift": "the fleet runs something else than the runner left it running",
    "waiting": "the pointer names no version yet",
    "resumed": "a deployment interrupted earlier was resumed",
    "paused": "a gate paused a deployment at a safe point (a window closed, a freeze): it is "
              "resumed at the first look its gates allow",
    "error": "the pointer or the fleet could not be read",
}
# The longest reason or summary kept in the status.
_TEXT = 480


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT else text[: _TEXT - 3] + "..."


@dataclass(frozen=True)
class Acted:
    """The pointer value (its revision) the runner has acted on."""

    revision: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "version": self.version}


@dataclass(frozen=True)
class LastDeployment:
    """The last deployment the runner ran."""

    uid: str
    id: int
    kind: str
    version: str
    status: str
    exit_code: int
    summary: str = ""
    at: str = ""
    revision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "id": self.id, "kind": self.kind, "version": self.version,
                "status": self.status, "exit_code": self.exit_code, "summary": _cut(self.summary),
                "at": self.at, "revision": self.revision}


@dataclass(frozen=True)
class AgentStatus:
    """See the module documentation."""

    env: str
    app: str
    decision: str
    reason: str = ""
    desired: Desired | None = None
    running: str | None = None
    versions: dict[str, int] = field(default_factory=dict)
    acted: Acted | None = None
    last_deployment: LastDeployment | None = None
    # The global id of the deployment this decision is about ("" when none).
    deployment: str = ""
    promotion: dict[str, str] | None = None
    exit_code: int = 0
    at: str = ""
    agent: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": STATUS_SCHEMA, "env": self.env, "app": self.app, "decision": self.decision,
            "reason": _cut(self.reason),
            "desired": self.desired.to_dict() if self.desired else None,
            "running": self.running, "versions": self.versions,
            "acted": self.acted.to_dict() if self.acted else None,
            "last_deployment": self.last_deployment.to_dict() if self.last_deployment else None,
            "deployment": self.deployment or None, "promotion": self.promotion,
            "exit_code": self.exit_code, "at": self.at, "agent": self.agent,
        }

    def to_text(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def same_as(self, other: AgentStatus | None) -> bool:
        """The same news (when and by which runner aside): no need to publish it again."""
        if other is None:
            return False
        return replace(self, at="", agent="").to_dict() == replace(other, at="", agent="").to_dict()

    @classmethod
    def from_text(cls, text: str | None) -> AgentStatus | None:
        """A published status, or None when there is none or it cannot be read (a runner then
        starts as if none had been published: it learns the rest from the fleet)."""
        if not text:
            return None
        try:
            raw = json.loads(text)
        except ValueError:
            return None
        if not isinstance(raw, dict) or raw.get("schema") != STATUS_SCHEMA:
            return None
        acted = raw.get("acted")
        last = raw.get("last_deployment")
        try:
            return cls(
                env=str(raw.get("env", "")), app=str(raw.get("app", "")),
                decision=str(raw.get("decision", "")), reason=str(raw.get("reason", "")),
                desired=Desired.from_dict(raw.get("desired")),
                running=raw.get("running") if isinstance(raw.get("running"), str) else None,
                versions={str(k): int(v) for k, v in (raw.get("versions") or {}).items()},
                acted=Acted(str(acted["revision"]), str(acted["version"]))
                if isinstance(acted, dict) else None,
                last_deployment=LastDeployment(
                    uid=str(last["uid"]), id=int(last["id"]), kind=str(last["kind"]),
                    version=str(last["version"]), status=str(last["status"]),
                    exit_code=int(last["exit_code"]), summary=str(last.get("summary", "")),
                    at=str(last.get("at", "")), revision=str(last.get("revision", "")),
                ) if isinstance(last, dict) else None,
                deployment=str(raw.get("deployment") or ""),
                promotion=raw.get("promotion") if isinstance(raw.get("promotion"), dict) else None,
                exit_code=int(raw.get("exit_code") or 0), at=str(raw.get("at", "")),
                agent=str(raw.get("agent", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
