"""The environment's runner (deployer agent), one look at a time, at the seams: the pointer is
the fake pointer, the runner replays scripted playbook runs; the lifecycle, the strategy, the
journal, the gates, the promotion records and their signatures are real. Fixtures:
tests/unit/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import NODES, Deployment

from deployer import ConfigError
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.agent import Agent, AgentStatus, Observed, decide, deployment_kind
from deployer.agent._pointer import Desired
from deployer.artefacts import generate_keypair, load_public_key
from deployer.config import AgentConfig, EnvironmentConfig, PromotionConfig
from deployer.engine.events import Published, Subscriber
from deployer.engine.fleet import Fleet
from deployer.engine.lifecycle import Lifecycle
from deployer.engine.strategy import Strategy
from deployer.gates import Gates
from deployer.promotion import PromotionGate, PromotionRecorder, open_record_store, read_records
from deployer.testing import (
    FakeLockHost,
    FakePointer,
    ReplayRunner,
    bad_batch,
    good_batch,
    survey,
)

Make = Callable[..., Deployment]


def probe(version: str | dict[str, str]) -> tuple[str, list[Any], str]:
    current = version if isinstance(version, dict) else dict.fromkeys(NODES, version)
    return survey(current, playbook="probe.yml")


def rollout(from_version: str) -> list[tuple[str, list[Any], str]]:
    return [survey(dict.fromkeys(NODES, from_version)),
            good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"])]


@dataclass
class Wired:
    env: EnvironmentConfig
    lifecycle: Lifecycle
    fleets: dict[str, Fleet]
    strategy: Strategy
    gates: Gates | None = None
    closed: int = 0

    def close(self) -> None:
        self.closed += 1


class Lines(Subscriber):
    """Every event the runner's streams carry (its own and its deployments')."""

    synchronous = True

    def __init__(self, sink: list[Published]) -> None:
        self.sink = sink

    def on_event(self, published: Published) -> None:
        self.sink.append(published)


@dataclass
class Runner:
    """An agent on a deployment of the unit tests' world, and what it said."""

    agent: Agent
    d: Deployment
    pointer: FakePointer
    heard: list[Published]

    def look(self) -> tuple[str, int]:
        step = self.agent.step()
        return step.decision, step.exit_code

    @property
    def status(self) -> AgentStatus:
        status = AgentStatus.from_text(self.pointer.status)
        assert status is not None
        return status

    def of(self, type_name: str) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.heard if p.type == type_name]

    def deployments(self) -> list[Any]:
        return self.d.journal.deployments("lab")


@pytest.fixture()
def runner(deployment: Make) -> Callable[..., Runner]:
    """``runner(scripts, pointer=..., config=..., recorder=..., checks=...)``."""

    def make(scripts: Sequence[Any] | ReplayRunner, *, pointer: FakePointer | None = None,
             config: AgentConfig | None = None, recorder: PromotionRecorder | None = None,
             **kw: Any) -> Runner:
        d = deployment(scripts, **kw)
        heard: list[Published] = []
        base = list(d.lifecycle.subscribers)

        def open_environment(subscribers: Sequence[Subscriber]) -> Wired:
            d.lifecycle.subscribers = [*base, *subscribers]
            return Wired(d.env, d.lifecycle, d.fleets, d.lifecycle.strategy)

        the_pointer = pointer or FakePointer()
        agent = Agent(env_name="lab", app="hello", config=config or AgentConfig(),
                      pointer=the_pointer, open_environment=open_environment,
                      subscribers=lambda: [Lines(heard)], recorder=recorder, identity="agent@test")
        return Runner(agent, d, the_pointer, heard)

    return make


# -- what one look decides (pure) --------------------------------------------------------------


def _observed(version: str) -> Observed:
    return Observed(nodes=dict.fromkeys(NODES, version))


def test_decide_in_order() -> None:
    desired = Desired("1.1.0", revision="2")
    assert decide(None, _observed("1.0.0"), None, correct_drift=False).decision == "waiting"
    assert decide(desired, _observed("1.1.0"), None, correct_drift=False).decision == "in_sync"
    plan = decide(desired, _observed("1.0.0"), None, correct_drift=False)
    assert (plan.action, plan.kind) == ("deploy", "deploy")
    assert decide(Desired("1.0.0", revision="3"), _observed("1.1.0"), None,
                  correct_drift=False).kind == "rollback"
    assert deployment_kind("1.10.0", "1.9.0") == "deploy"
    assert deployment_kind("1.0.0", None) == "deploy"


# -- looks ------------------------------------------------------------------------------------


def test_a_pointer_change_starts_a_deployment_and_a_repeat_does_nothing(
    runner: Callable[..., Runner],
) -> None:
    pointer = FakePointer()
    r = runner([probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0"), probe("1.1.0"), probe("1.1.0")],
               pointer=pointer)
    pointer.set("1.1.0", reason="release train 49", requester="ana")
    assert r.look() == ("deployed", 0)
    [record] = r.deployments()
    assert (record.kind, record.version, record.status) == ("deploy", "1.1.0", "succeeded")
    assert record.details["pointer"]["requester"] == "ana"  # who asked, in the audit trail
    status = r.status
    assert status.decision == "deployed" and status.running == "1.1.0"
    assert status.versions == {"1.1.0": 3}
    assert status.acted is not None and status.acted.revision == str(pointer.revision)
    assert status.last_deployment is not None and status.last_deployment.uid == record.uid
    assert status.deployment == record.uid and status.desired is not None
    assert status.desired.reason == "release train 49"
    written = len(pointer.status_writes)
    # Again and again: nothing to do, no history row, the status not rewritten.
    assert r.look() == ("in_sync", 0)
    assert r.look() == ("in_sync", 0)
    assert len(r.deployments()) == 1
    assert len(pointer.status_writes) == written + 1  # once, to say "in sync"
    assert [req.playbook for req in r.d.runner.requests].count("rollout.yml") == 1
    # The deployment's own events are on the same stream, between the runner's.
    types = [p.type for p in r.heard]
    assert types.index("deployment_started") < types.index("deployment_finished") < types.index(
        "status_published")


def test_a_pointer_naming_what_runs_does_nothing(runner: Callable[..., Runner]) -> None:
    r = runner([probe("1.0.0")], pointer=FakePointer("1.0.0"))
    assert r.look() == ("in_sync", 0)
    assert r.deployments() == [] and r.d.runner.requests[0].playbook == "probe.yml"
    assert r.status.acted is not None and r.status.acted.version == "1.0.0"


def test_no_version_in_the_pointer_is_waiting(runner: Callable[..., Runner]) -> None:
    r = runner([probe("1.0.0")])
    assert r.look() == ("waiting", 0)
    assert r.status.decision == "waiting" and r.status.running == "1.0.0"


def test_a_pointer_value_that_is_not_a_version_is_refused(runner: Callable[..., Runner]) -> None:
    r = runner([], pointer=FakePointer("1.0.0; rm -rf /"))
    decision, code = r.look()
    assert (decision, code) == ("refused", 1)
    assert "is not a valid version" in r.status.reason and r.deployments() == []


def test_an_unreadable_pointer_is_an_error(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer("1.1.0")
    pointer.unreadable = "connection refused"
    r = runner([], pointer=pointer)
    assert r.look() == ("error", 1)
    [decided] = r.of("agent_decision")
    assert "cannot read the pointer" in decided["reason"] and r.deployments() == []


def test_an_earlier_version_runs_as_a_rollback(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer()
    r = runner([probe("1.1.0"), *rollout("1.1.0"), probe("1.0.0")], pointer=pointer)
    pointer.set("1.0.0", reason="3 a.m.: checkout errors")
    assert r.look() == ("deployed", 0)
    [record] = r.deployments()
    assert (record.kind, record.version) == ("rollback", "1.0.0")


def test_a_failed_deployment_is_not_retried_until_the_pointer_is_written_again(
    runner: Callable[..., Runner],
) -> None:
    pointer = FakePointer()
    r = runner([probe("1.0.0"), survey(dict.fromkeys(NODES, "1.0.0")), bad_batch("node1"),
                probe("1.0.0"), probe("1.0.0"),
                probe("1.0.0"), survey(dict.fromkeys(NODES, "1.0.0")), bad_batch("node1"),
                probe("1.0.0")], pointer=pointer)
    pointer.set("1.2.0-badhealth")
    assert r.look() == ("failed", 10)
    status = r.status
    assert status.running == "1.0.0" and status.acted is not None
    assert status.last_deployment is not None and status.last_deployment.status == "rolled_back"
    # The same pointer value: the outcome stands (the exit code says it), nothing is retried.
    assert r.look() == ("failed", 10)
    assert len(r.deployments()) == 1
    assert "write the pointer again to retry" in r.of("agent_decision")[-1]["reason"]
    pointer.set("1.2.0-badhealth", reason="retry")  # a new request for the same version
    assert r.look() == ("failed", 10)
    assert len(r.deployments()) == 2


def test_a_gate_refusal_changes_nothing_and_is_tried_again(
    runner: Callable[..., Runner], tmp_path: Path,
) -> None:
    keys = generate_keypair(tmp_path / "keys", "preprod")
    (tmp_path / "promotions").mkdir()
    store = f"file://{tmp_path / 'promotions'}"
    gate = PromotionGate(env_name="lab", app="hello", config=PromotionConfig(
        after="preprod", trusted_keys=[keys.public_path], store=store))
    pointer = FakePointer()
    r = runner([probe("1.0.0"), probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0")],
               pointer=pointer, checks=[gate])
    pointer.set("1.1.0")
    assert r.look() == ("refused", 14)
    status = r.status
    assert status.decision == "refused" and status.exit_code == 14 and status.acted is None
    assert "no valid promotion record from preprod" in status.reason
    assert [(d.status, d.details.get("refused_before_lock")) for d in r.deployments()] == [
        ("refused", True)]  # on the record; nothing changed
    assert [q.playbook for q in r.d.runner.requests] == ["probe.yml"]
    # Asked again at the next look: refused again, not recorded again.
    r.d.runner.scripts.insert(0, probe("1.0.0"))
    assert r.look() == ("refused", 14)
    assert len(r.deployments()) == 1
    sha = r.d.lifecycle.verify_release("1.1.0").sha256
    PromotionRecorder(env_name="preprod", app="hello", signing_key=keys.secret_path,
                      store_url=store).record(version="1.1.0", sha256=sha,
                                              deployment="01JEXS7V8T6Q3M0W2ZB1K9D4RC", at=0,
                                              checks=[], nodes=[])
    assert r.look() == ("deployed", 0)  # preprod passed it since: the same request goes through


def test_a_lock_held_by_another_controller_is_busy_not_an_error(runner: Callable[..., Runner]) -> None:
    host = FakeLockHost()
    EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1")).acquire()
    pointer = FakePointer()
    r = runner([probe("1.0.0")], pointer=pointer, lock=EnvironmentLock(host, "lab"))
    pointer.set("1.1.0")
    assert r.look() == ("busy", 0)
    # Busy is not a refusal: nothing changed, nothing recorded; the next look tries again.
    assert "ci@far" in r.status.reason and r.status.acted is None and r.deployments() == []
    assert [q.playbook for q in r.d.runner.requests] == ["probe.yml"]  # nothing staged


def test_drift_is_published_and_corrected_only_when_asked(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer()
    r = runner([probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0"),
                probe("1.0.0"), probe("1.0.0")], pointer=pointer)
    pointer.set("1.1.0")
    assert r.look() == ("deployed", 0)
    # Someone deployed 1.0.0 by hand.
    assert r.look() == ("drift", 1)
    assert "the runner left every serving node on 1.1.0" in r.status.reason
    assert "not corrected" in r.status.reason
    assert r.look() == ("drift", 1)
    assert len(r.deployments()) == 1
    # The same situation with correct_drift: deployed again.
    r.agent.config = AgentConfig(correct_drift=True)
    r.d.runner.scripts += [probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0")]
    assert r.look() == ("deployed", 0)
    assert "drift" in r.status.reason and len(r.deployments()) == 2


def test_a_success_is_recorded_as_a_signed_promotion_record(
    runner: Callable[..., Runner], tmp_path: Path,
) -> None:
    keys = generate_keypair(tmp_path / "keys", "lab")
    (tmp_path / "promotions").mkdir()
    store = f"file://{tmp_path / 'promotions'}"
    recorder = PromotionRecorder(env_name="lab", app="hello", signing_key=keys.secret_path,
                                 store_url=store)
    pointer = FakePointer()
    r = runner([probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0")], pointer=pointer,
               recorder=recorder)
    pointer.set("1.1.0")
    assert r.look() == ("deployed", 0)
    [signed] = read_records(open_record_store(store), "hello", "1.1.0", "lab")
    record = signed.verified([load_public_key(keys.public_path)])
    assert record.deployment == r.deployments()[0].uid
    assert record.sha256 == r.d.lifecycle.verify_release("1.1.0").sha256
    assert record.checks == ("signature", "smoke") and record.nodes == tuple(NODES)
    assert r.status.promotion == {"where": signed.where, "key_id": signed.key_id}
    [event] = r.of("promotion_recorded")
    assert event["ok"] and event["deployment"]["uid"] == record.deployment


def test_no_record_when_a_node_is_not_on_the_release_afterwards(
    runner: Callable[..., Runner], tmp_path: Path,
) -> None:
    keys = generate_keypair(tmp_path / "keys", "lab")
    (tmp_path / "promotions").mkdir()
    store = f"file://{tmp_path / 'promotions'}"
    recorder = PromotionRecorder(env_name="lab", app="hello", signing_key=keys.secret_path,
                                 store_url=store)
    pointer = FakePointer()
    r = runner([probe("1.0.0"), *rollout("1.0.0"),
                probe({"node1": "1.1.0", "node2": "1.1.0", "node3": "1.0.0"})],
               pointer=pointer, recorder=recorder)
    pointer.set("1.1.0")
    assert r.look() == ("deployed", 0)
    assert read_records(open_record_store(store), "hello", "1.1.0") == []
    assert "no promotion record" in r.status.reason
    assert not r.of("promotion_recorded")[0]["ok"]


def test_a_stop_request_stops_the_deployment_at_its_next_safe_point(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer()
    r = runner([probe("1.0.0"), survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]),
                probe({"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"})], pointer=pointer)
    r.d.recorder.after_batch(1, r.agent.request_stop)
    pointer.set("1.1.0")
    assert r.look() == ("stopped", 130)
    [record] = r.deployments()
    assert record.status == "cancelled"
    assert r.status.acted is None  # not acted on: a restarted runner carries on
    assert r.agent.stopping and r.agent.step().decision == "stopped"


def test_a_second_runner_learns_from_the_fleet_and_the_published_status(
    runner: Callable[..., Runner],
) -> None:
    pointer = FakePointer()
    first = runner([probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0")], pointer=pointer)
    pointer.set("1.1.0")
    assert first.look() == ("deployed", 0)
    second = runner([probe("1.1.0")], pointer=pointer)  # another state directory: no journal
    assert second.look() == ("in_sync", 0)
    assert second.deployments() == first.deployments()  # the same world's journal, untouched


def test_polls_are_jittered() -> None:
    agent = Agent(env_name="lab", app="hello", config=AgentConfig(interval=30, jitter=0.2),
                  pointer=FakePointer(), open_environment=lambda s: None,  # type: ignore[arg-type,return-value]
                  rng=lambda: 0.0)
    assert agent.wait_time() == pytest.approx(24.0)
    agent.rng = lambda: 1.0
    assert agent.wait_time() == pytest.approx(36.0)


def test_once_runs_one_look_and_exits_with_its_code(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer()
    r = runner([probe("1.0.0"), *rollout("1.0.0"), probe("1.1.0")], pointer=pointer)
    pointer.set("1.1.0")
    assert r.agent.run(once=True) == 0
    types = [p.type for p in r.heard]
    assert types[0] == "agent_started" and types[-1] == "agent_stopped"
    assert json.loads(pointer.status or "{}")["decision"] == "deployed"


def test_an_environment_that_cannot_be_wired_is_an_error_look_not_a_crash() -> None:
    pointer = FakePointer("1.1.0")

    def broken(subscribers: Sequence[Subscriber]) -> Wired:
        raise ConfigError("inventory file not found", file="/etc/deployer/lab.yml",
                          field="environments.lab.inventory")

    agent = Agent(env_name="lab", app="hello", config=AgentConfig(), pointer=pointer,
                  open_environment=broken)
    step = agent.step()
    assert (step.decision, step.exit_code) == ("error", 1)
    status = AgentStatus.from_text(pointer.status)
    assert status is not None and "inventory file not found" in status.reason


def test_a_timers_repeated_looks_do_not_rewrite_the_status(runner: Callable[..., Runner]) -> None:
    pointer = FakePointer("1.0.0")
    first = runner([probe("1.0.0")], pointer=pointer)
    assert first.agent.run(once=True) == 0
    assert len(pointer.status_writes) == 1
    again = runner([probe("1.0.0")], pointer=pointer)  # the next run of the timer: a new process
    assert again.agent.run(once=True) == 0
    assert len(pointer.status_writes) == 1  # the same news: not written again
    assert [e["decision"] for e in again.of("agent_decision")] == ["in_sync"]


def test_a_record_the_runner_was_killed_before_publishing_is_published_when_it_looks_again(
    runner: Callable[..., Runner], tmp_path: Path,
) -> None:
    keys = generate_keypair(tmp_path / "keys", "lab")
    (tmp_path / "promotions").mkdir()
    store = f"file://{tmp_path / 'promotions'}"
    recorder = PromotionRecorder(env_name="lab", app="hello", signing_key=keys.secret_path,
                                 store_url=store)
    pointer = FakePointer()
    r = runner([*rollout("1.0.0"), probe("1.1.0"), probe("1.1.0")], pointer=pointer,
               recorder=recorder)
    pointer.set("1.1.0")
    # The deployment ran and succeeded; the runner died before it recorded or published it.
    outcome = r.d.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert r.look() == ("in_sync", 0)
    [signed] = read_records(open_record_store(store), "hello", "1.1.0", "lab")
    record = signed.verified([load_public_key(keys.public_path)])
    assert (record.deployment, record.sha256) == (outcome.uid, r.d.lifecycle.verify_release("1.1.0").sha256)
    assert r.status.promotion == {"where": signed.where, "key_id": signed.key_id}
    assert r.look() == ("in_sync", 0)  # once
    assert len(read_records(open_record_store(store), "hello", "1.1.0", "lab")) == 1
