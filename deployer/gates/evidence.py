"""Every deployment's evidence record: what ran where, asked by whom, approved by whom, in which
window, with which checks, and what happened — one signed document an auditor reads and
verifies without access to the fleet.

:class:`EvidenceCollector` is a subscriber of the deployment's events (synchronous, so that
the record is complete when the deployment ends, refused ones included). When the deployment
finishes it builds the record from what it heard — the start (who, the command, the release,
its signing key, High Risk), every gate's verdict at every safe point, the plan (nodes, legs),
every node phase (each node smoke check with its result), every soak round, further smoke
test and verdict, the preview smoke tests, the switches of live traffic, the outcome of each
node — and from what the gates found (the requester's signed request, the approvals with
their signatures, the change record, the window, the decision record, break-glass). Then:

- it signs the record's bytes with the environment's evidence key (``gates.evidence.key``,
  minisign: the standard ``minisign -V`` verifies it too);
- keeps record and signature in the journal (``deployer evidence show``);
- publishes both to the store (``gates.evidence.store``, else the promotion store beside the
  promotion records, else the environment's store), at
  ``_evidence/<env>/<uid>.json`` and ``.json.minisig``.

A failure to sign or publish is said (and the record kept unsigned or unpublished in the
journal): it never changes the deployment's outcome. :func:`verify_evidence` checks a record
against a trusted public key (``deployer evidence verify``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .. import __version__
from .._clock import iso_utc
from .._errors import ConfigError, DeployerError, VerificationError
from ..adapters.journal import Journal
from ..artefacts import ArtefactStore, PublicKey, SecretKey, load_secret_key, sign_bytes
from ..artefacts import verify_signature as verify_minisign
from ..config import EnvironmentConfig
from ..engine.events import (
    CheckVerdictEvent,
    DeploymentFinished,
    DeploymentStarted,
    LegSmoked,
    NodePhaseChanged,
    PlanMade,
    Published,
    SoakJudged,
    SoakRound,
    SoakSmoke,
    Subscriber,
    TrafficSwitched,
)
from .approvals import canonical
from .checks import GateState

__all__ = ["EVIDENCE_KIND", "EvidenceCollector", "EvidenceSigner", "record_key", "verify_evidence"]

EVIDENCE_KIND = "deployer-evidence"
SCHEMA = 1


def record_key(env: str, uid: str) -> str:
    """Where a deployment's evidence is published in a store."""
    return f"_evidence/{env}/{uid}.json"


@dataclass(frozen=True)
class EvidenceSigner:
    """The environment's evidence-signing key, loaded when the command starts (a key that
    cannot be read stops it before anything happens)."""

    key: SecretKey
    path: Path

    @classmethod
    def of(cls, env: EnvironmentConfig, *, environ: dict[str, str] | None = None) -> EvidenceSigner | None:
        evidence = env.gates.evidence
        if evidence.key is None:
            return None
        password = (environ if environ is not None else os.environ).get(evidence.password_env)
        try:
            return cls(load_secret_key(evidence.key, password=password), evidence.key)
        except ConfigError as exc:
            raise ConfigError(f"gates.evidence.key: {exc.message}", hint=exc.hint or (
                f"the evidence key's password comes from ${evidence.password_env}")) from None

    @property
    def key_id(self) -> str:
        return self.key.key_id_hex

    def sign(self, data: bytes, *, uid: str) -> str:
        return sign_bytes(data, self.key, trusted_comment=f"deployer evidence {uid}").decode()


class EvidenceCollector(Subscriber):
    """Builds, signs, keeps and publishes a deployment's evidence record (see the module
    documentation)."""

    synchronous: ClassVar[bool] = True

    def __init__(
        self, *, state: GateState, env: EnvironmentConfig, journal: Journal,
        signer: EvidenceSigner | None, store: Callable[[], ArtefactStore] | None,
        nodes: dict[str, str | None], say: Callable[[str], None],
    ) -> None:
        self.state = state
        self.env = env
        self.journal = journal
        self.signer = signer
        self.store = store
        self.nodes = nodes
        self.say = say
        self.started: dict[str, Any] = {}
        self.started_at = 0.0
        self.gates: list[dict[str, Any]] = []
        self.plan: dict[str, Any] = {}
        self.phases: list[dict[str, Any]] = []
        self.smoke: list[dict[str, Any]] = []
        self.soak: list[dict[str, Any]] = []
        self.switches: list[dict[str, Any]] = []
        self._pending_smoke: dict[str, dict[str, Any]] = {}
        # What was built, for tests and the CLI: the record's bytes, its signature.
        self.record: bytes = b""
        self.signature = ""
        self.published = ""

    def _reset(self) -> None:
        self.gates, self.phases, self.smoke, self.soak, self.switches = [], [], [], [], []
        self.plan, self._pending_smoke = {}, {}
        self.record, self.signature, self.published = b"", "", ""

    def on_event(self, published: Published) -> None:
        try:
            self._hear(published)
        except Exception as exc:  # never let the evidence end the deployment
            self.say(f"warning: the evidence record could not be made: {type(exc).__name__}: {exc}")

    def _hear(self, published: Published) -> None:
        ev = published.event
        at = iso_utc(published.at)
        if isinstance(ev, DeploymentStarted):
            self._reset()  # a new deployment (a lifecycle may run several)
            self.started = ev.data()
            self.started_at = published.at
        elif isinstance(ev, CheckVerdictEvent):
            self.gates.append({"at": at, "point": ev.point, "gate": ev.check,
                               "decision": ev.decision, "reason": ev.reason})
        elif isinstance(ev, PlanMade):
            self.plan = ev.plan
        elif isinstance(ev, NodePhaseChanged):
            self.phases.append({"at": at, "node": ev.node, "phase": ev.phase, "from": ev.from_version,
                                "to": ev.to_version, "detail": ev.detail, "leg": ev.leg})
            self._node_smoke(at, ev)
        elif isinstance(ev, SoakRound):
            self.soak.append({"at": at, "type": "round", "scope": ev.scope, "round": ev.round,
                              "results": ev.results})
        elif isinstance(ev, SoakSmoke):
            self.soak.append({"at": at, "type": "smoke", "scope": ev.scope, "result": ev.result})
        elif isinstance(ev, SoakJudged):
            self.soak.append({"at": at, "type": "verdict", "scope": ev.scope, "subject": ev.subject,
                              "outcome": ev.outcome, "line": ev.line, "tolerated": ev.tolerated})
        elif isinstance(ev, LegSmoked):
            self.smoke.append({"at": at, "check": "preview", "leg": ev.leg, "url": ev.url,
                               "requests": ev.requests, "passed": ev.ok, "problem": ev.problem})
        elif isinstance(ev, TrafficSwitched):
            self.switches.append({"at": at, "from": ev.from_leg, "to": ev.to_leg, "back": ev.back,
                                  "seconds": ev.seconds, "where": ev.where})
        elif isinstance(ev, DeploymentFinished):
            self._finish(published, ev)

    def _node_smoke(self, at: str, ev: NodePhaseChanged) -> None:
        """A node's smoke check: it passed when the node went on to rejoin, failed when it
        was reverted or failed instead."""
        if ev.phase == "smoke":
            self._pending_smoke[ev.node] = {"at": at, "check": "node", "node": ev.node,
                                            "version": ev.to_version, "leg": ev.leg}
            return
        pending = self._pending_smoke.pop(ev.node, None)
        if pending is not None:
            passed = ev.phase in ("rejoining", "done")
            self.smoke.append({**pending, "passed": passed,
                               "detail": "" if passed else ev.detail or ev.phase})

    def build(self, published: Published, finished: DeploymentFinished) -> dict[str, Any]:
        ref = published.deployment
        assert ref is not None
        state = self.state
        started = self.started
        nodes = {name: {"leg": leg, **finished.nodes.get(name, {})} for name, leg in self.nodes.items()}
        requester = state.requester
        return {
            "kind": EVIDENCE_KIND, "schema": SCHEMA, "deployer_version": __version__,
            "deployment": {
                "uid": ref.uid, "id": ref.id, "environment": ref.env, "kind": ref.kind,
                "version": ref.version, "status": finished.status, "exit_code": finished.exit_code,
                "summary": finished.summary, "hint": finished.hint or None,
                "warnings": finished.warnings, "resumes": started.get("resumes"),
                "refused_before_lock": not started.get("locked", True),
                "high_risk": started.get("high_risk") or None,
                "break_glass": state.break_glass,
                "started": iso_utc(self.started_at), "ended": iso_utc(published.at),
                "duration_s": finished.duration_s,
            },
            "requested_by": {
                "actor": started.get("actor"), "command": started.get("command"),
                "requester": None if requester is None else {
                    "name": requester.name, "key_id": requester.key_id,
                    "request": requester.request, "signature": requester.signature,
                },
                "pointer": state.request.pointer,
            },
            "release": {
                "app": started.get("app") or self.env.app.name, "version": ref.version,
                "sha256": started.get("sha256") or None, "signing_key_id": started.get("key_id") or None,
            },
            "where": {
                "environment": ref.env, "strategy": started.get("strategy"),
                "nodes": sorted(self.nodes), "legs": self.plan.get("legs"),
                "targets": self.plan.get("targets"),
            },
            "promotion": next(({"decision": g["decision"], "reason": g["reason"]}
                               for g in self.gates
                               if g["gate"] == "promotion" and g["point"] == "admission"), None),
            "approvals": state.approvals,
            "change": {"id": state.request.change,
                       "record": state.change.to_dict() if state.change else None,
                       "provider": state.config.approvals.provider if state.config.approvals else None},
            "window": state.window or None,
            "decision_record": state.decision_record,
            "zero_downtime_gaps": state.zero_downtime_gaps,
            "gates": self.gates,
            "checks": {"smoke": self.smoke, "soak": self.soak},
            "switches": self.switches,
            "nodes": nodes,
            "out_of_service": finished.out_of_service,
            "timeline": self.phases,
        }

    def _finish(self, published: Published, finished: DeploymentFinished) -> None:
        ref = published.deployment
        if ref is None or ref.id <= 0:
            return  # a plan, not a deployment
        self.record = canonical(self.build(published, finished))
        if self.signer is not None:
            try:
                self.signature = self.signer.sign(self.record, uid=ref.uid)
            except DeployerError as exc:
                self.say(f"warning: the evidence record of {ref.uid} could not be signed: {exc}")
        if self.signature and self.store is not None and self.env.gates.evidence.publish:
            self.published = self._publish(ref.env, ref.uid)
        self.journal.put_evidence(ref.id, ref.uid, self.record, signature=self.signature,
                                  key_id=self.signer.key_id if self.signature and self.signer else "",
                                  published=self.published)

    def _publish(self, env: str, uid: str) -> str:
        assert self.store is not None
        key = record_key(env, uid)
        try:
            store = self.store()
            store.put_record(key, self.record)
            store.put_record(key + ".minisig", self.signature.encode())
        except DeployerError as exc:
            self.say(f"warning: the evidence record of {uid} was not published: {exc}; it is kept "
                     "in the journal (`deployer evidence show`)")
            return ""
        return f"{store.url.rstrip('/')}/{key}"


def verify_evidence(record: bytes, signature: bytes, trusted: list[PublicKey]) -> dict[str, Any]:
    """The evidence record, once its signature is by a trusted key; VerificationError saying
    why otherwise (the signature, or a document that is not an evidence record)."""
    verify_minisign(record, signature, trusted)
    try:
        data = json.loads(record)
    except ValueError:
        raise VerificationError("the signed file is not JSON: not an evidence record") from None
    if not isinstance(data, dict) or data.get("kind") != EVIDENCE_KIND:
        raise VerificationError("the signed file is not a deployer evidence record")
    return data
