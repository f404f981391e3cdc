"""The environment's runner (deployer agent) and the governance gates, one look at a time: it
waits for a release window and then deploys, records a refused request once, resumes a
deployment a freeze paused once the environment is unfrozen, and takes the requester (by key),
the change and the approvals from the pointer's request. Fakes at the seams only (the pointer,
the playbook runs, the load balancer); the gates, the lifecycle and the journal are real.
Fixtures: tests/unit/conftest.py and gates_world.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import NODES
from gates_world import DAY_WINDOW, HOUR, TUESDAY_1550, Clock, Gated, People, at_batch, gated

from deployer.agent import Agent, AgentStatus
from deployer.agent._pointer import Desired
from deployer.cli._wiring import release_verifier
from deployer.config import AgentConfig
from deployer.engine.events import Published, Subscriber
from deployer.gates.approvals import sign_pointer_request
from deployer.testing import FakeLoadBalancer, FakePointer, ReplayRunner, good_batch, survey

FROM_1_0 = dict.fromkeys(NODES, "1.0.0")


def probe(versions: dict[str, str]) -> Any:
    return survey(versions, playbook="probe.yml")


@dataclass
class Wired:
    g: Gated

    @property
    def env(self) -> Any:
        return self.g.d.env

    @property
    def lifecycle(self) -> Any:
        return self.g.d.lifecycle

    @property
    def fleets(self) -> Any:
        return self.g.d.fleets

    @property
    def strategy(self) -> Any:
        return self.g.d.lifecycle.strategy

    @property
    def gates(self) -> Any:
        return self.g.gates

    def close(self) -> None:
        pass


class Heard(Subscriber):
    synchronous = True

    def __init__(self) -> None:
        self.events: list[Published] = []

    def on_event(self, published: Published) -> None:
        self.events.append(published)


@dataclass
class Runner:
    agent: Agent
    g: Gated
    pointer: FakePointer

    def look(self) -> tuple[str, int]:
        step = self.agent.step()
        self.retry_at = step.retry_at
        return step.decision, step.exit_code

    @property
    def status(self) -> AgentStatus:
        status = AgentStatus.from_text(self.pointer.status)
        assert status is not None
        return status

    def statuses(self) -> list[tuple[str, str]]:
        return [(r.kind, r.status) for r in self.g.d.journal.deployments("lab")]


def runner(g: Gated, *, require_signed: bool = False) -> Runner:
    base = list(g.d.lifecycle.subscribers)
    heard = Heard()

    def open_environment(subscribers: Sequence[Subscriber]) -> Wired:
        g.d.lifecycle.subscribers = [*base, *subscribers]
        return Wired(g)

    pointer = FakePointer()
    agent = Agent(env_name="lab", app="hello", config=AgentConfig(), pointer=pointer,
                  open_environment=open_environment, subscribers=lambda: [heard],
                  identity="agent@test", require_signed=require_signed, clock=g.clock)
    return Runner(agent, g, pointer)


def test_the_runner_waits_for_a_window_records_the_refusal_once_then_deploys(
    world: dict[str, Path],
) -> None:
    # Tuesday 17:00: after the 09:00-16:00 window; the next opens on Wednesday at 09:00.
    clock = Clock(TUESDAY_1550 + HOUR + 10 * 60)
    g = gated(world["config"], [probe(FROM_1_0), probe(FROM_1_0)], gates=DAY_WINDOW, clock=clock)
    r = runner(g)
    r.pointer.set("1.1.0", reason="the new checkout")
    wednesday_0900 = TUESDAY_1550 + 17 * HOUR + 10 * 60
    assert r.look() == ("refused", 14)
    assert r.retry_at == wednesday_0900  # it looks again as the window opens
    assert "refused by the window gate: outside every release window" in r.status.reason
    assert "the next opens wed 2026-12-09 09:00 UTC" in r.status.reason
    assert r.statuses() == [("deploy", "refused")]  # the refusal is on the record
    # A look later: still outside; asked again, not recorded again.
    clock.t += HOUR
    assert r.look() == ("refused", 14)
    assert r.statuses() == [("deploy", "refused")]
    assert [q.playbook for q in g.d.runner.requests] == ["probe.yml", "probe.yml"]  # nothing staged
    # Wednesday 09:01: the same request goes through.
    clock.t = wednesday_0900 + 60
    g.d.runner.scripts += [probe(FROM_1_0), survey(FROM_1_0),
                           *[good_batch([n]) for n in NODES], probe(dict.fromkeys(NODES, "1.1.0"))]
    assert r.look() == ("deployed", 0)
    assert r.statuses() == [("deploy", "succeeded"), ("deploy", "refused")]
    assert g.gates.state.window.startswith("in the window every day 09:00-16:00 UTC")


def test_a_freeze_pauses_the_runners_deployment_and_unfreeze_lets_it_continue(
    world: dict[str, Path],
) -> None:
    lb = FakeLoadBalancer("hello", NODES)
    half = {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    scripts = ReplayRunner([probe(FROM_1_0), survey(FROM_1_0), good_batch(["node1"]), probe(half)],
                           lb=lb)
    g = gated(world["config"], scripts, lb=lb, gates={})
    at_batch(g.d, 1, lambda: g.freeze.freeze(by="oncall@ops", reason="incident INC-7"))
    r = runner(g)
    r.pointer.set("1.1.0")
    assert r.look() == ("paused", 15)
    assert "paused by the freeze gate before batch 2/3" in r.status.reason
    assert lb.admin == dict.fromkeys(NODES, "ready")
    # Frozen: the paused deployment waits, and the pointer's request is not deployed anew.
    assert r.look() == ("paused", 15)
    assert "a paused deployment waits for its gates: refused by the freeze gate" in r.status.reason
    assert "frozen by oncall@ops" in r.status.reason
    assert r.look() == ("paused", 15)
    assert r.statuses() == [("deploy", "paused")]  # the pause is the record: no refusals added
    # Unfrozen: the next look resumes it to the end, then finds the fleet in sync.
    g.freeze.unfreeze(by="oncall@ops", reason="resolved")
    g.d.recorder.on.clear()  # no freeze at the resume's first batch
    g.d.runner.scripts += [survey(half), good_batch(["node2"]), good_batch(["node3"]),
                           probe(dict.fromkeys(NODES, "1.1.0"))]
    assert r.look() == ("in_sync", 0)
    assert r.statuses() == [("resume", "succeeded"), ("deploy", "paused")]
    assert g.d.runner.batches == [["node1"], ["node2"], ["node3"]]


def _signed_value(people: People, g: Gated, *, signer: str, version: str = "1.1.0",
                  signed_version: str | None = None, approvals: Sequence[Any] = ()) -> str:
    sha256 = release_verifier(g.d.env)(version).sha256
    set_at = "2026-12-08T15:00:00Z"
    secret = people.requester(signer).requester_secret
    assert secret is not None
    signed = sign_pointer_request(secret, {
        "app": "hello", "environment": "lab", "version": signed_version or version,
        "sha256": sha256, "reason": "release", "requester": signer, "set_at": set_at,
        "change": None, "high_risk": ""})
    return Desired(version=version, reason="release", requester=signer, set_at=set_at,
                   approvals=tuple({"approval": a.payload, "signature": a.signature.decode()}
                                   for a in approvals), signed=signed).to_text()


def _approvals_gates(people: People) -> dict[str, Any]:
    return {"approvals": {"approvers": people.approvers(), "requesters": [
        {"name": "ci", "key": str(people.keys["ci"].public_path)},
        {"name": "sam", "key": str(people.keys["sam"].public_path)}]}}


def test_the_runner_knows_the_requester_by_the_pointers_signature_and_checks_four_eyes(
    world: dict[str, Path],
) -> None:
    people = People.make(world["root"])
    g = gated(world["config"], [probe(FROM_1_0)] * 4, gates=_approvals_gates(people))
    r = runner(g, require_signed=True)
    # Unsigned: refused (pointer.require_signed).
    r.pointer.set("1.1.0")
    assert r.look() == ("refused", 14)
    assert "refused by the requester gate: the pointer's request is not signed" in r.status.reason
    # Signed by sam, approved by sam: an approver may not approve their own request.
    own = people.approve("sam", g.d.env, "1.1.0", now=TUESDAY_1550)
    r.pointer.write(_signed_value(people, g, signer="sam", approvals=[own]))
    assert r.look() == ("refused", 14)
    assert "signed by the requester's own key" in r.status.reason
    # A signature over another version than the pointer names: refused.
    r.pointer.write(_signed_value(people, g, signer="ci", signed_version="1.0.0", approvals=[own]))
    assert r.look() == ("refused", 14)
    assert "is for version '1.0.0', not '1.1.0'" in r.status.reason
    # Signed by ci, approved by sam: deployed, the requester and approver in the evidence.
    r.pointer.write(_signed_value(people, g, signer="ci", approvals=[own]))
    g.d.runner.scripts += [survey(FROM_1_0), *[good_batch([n]) for n in NODES],
                           probe(dict.fromkeys(NODES, "1.1.0"))]
    assert r.look() == ("deployed", 0)
    assert g.gates.state.requester is not None and g.gates.state.requester.name == "ci"
    evidence = g.gates.evidence
    assert evidence is not None
    record = json.loads(evidence.record)
    requester = record["requested_by"]["requester"]
    assert requester["name"] == "ci" and requester["request"]["kind"] == "deployer-pointer-request"
    assert requester["key_id"] == people.keys["ci"].key_id_hex
    assert record["requested_by"]["pointer"]["where"] == "fake:pointer"
    assert record["requested_by"]["pointer"]["signed"] is True
    assert [a["approver"] for a in record["approvals"]] == ["sam"]
    assert [s for _, s in r.statuses()] == ["succeeded", "refused", "refused", "refused"]
