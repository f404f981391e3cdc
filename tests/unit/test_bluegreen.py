"""The blue-green strategy's decisions, with the load balancer's fake (its seam) and legs that
report what a leg engine would. The real thing, on the lab: tests/e2e/test_blue_green.py."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deployer import DeploymentRefused
from deployer._config import EnvironmentConfig
from deployer._errors import AnalysisError
from deployer.adapters.inventory import Node
from deployer.adapters.journal import Journal
from deployer.adapters.loadbalancer import FakeLoadBalancer, ServerState
from deployer.engine.bluegreen import BlueGreen
from deployer.engine.engine import NodeFacts, NodeStatus, Outcome, Release
from deployer.engine.soaking import Soaks
from deployer.engine.states import NodePhase

MAP = "/etc/haproxy/legs.map"


class FakeLeg:
    """A leg engine's answers: its nodes' releases, and the outcome of rolling a release."""

    def __init__(self, names: list[str], version: str, lb: FakeLoadBalancer, backend: str) -> None:
        self.nodes = [Node(name=n, address=n, app_host=n, lb_server=n) for n in names]
        self.version = version
        self.lb = lb
        self.backend = backend
        self.steps: list[str] = []
        self.fail_with = ""
        # Called with the lease of the deployment's lock while the leg rolls.
        self.during: Any = None
        # What the environment's successful history says to go back to.
        self.history_target = "1.0.0"

    def probe(self) -> dict[str, NodeFacts]:
        return {n.name: NodeFacts(current=self.version, healthy=True) for n in self.nodes}

    def lb_states(self) -> dict[str, ServerState]:
        return self.lb.servers(self.backend)

    def request_stop(self) -> bool:
        return False

    def deploy_step(self, deployment_id: int, release: Release, kind: str,
                    lease: object = None) -> Outcome:
        self.steps.append(release.version)
        if self.during is not None:
            self.during(lease)
        nodes = {n.name: NodeStatus(node=n, phase=NodePhase.DONE, from_version=self.version,
                                    to_version=release.version) for n in self.nodes}
        if self.fail_with:
            return Outcome(deployment_id, kind, release.version, "rolled_back", nodes, self.fail_with)
        self.version = release.version
        return Outcome(deployment_id, kind, release.version, "succeeded", nodes, "ok")

    def rollback_target(self) -> str:
        return self.history_target


class FakeVerdict:
    def __init__(self, failed: bool, line: str) -> None:
        self.failed = failed
        self._line = line

    def line(self) -> str:
        return self._line

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": "failed" if self.failed else "passed", "line": self._line}


class FakeSoaks:
    """The soak analysis' answers: every source readable (or not), and a verdict."""

    def __init__(self, verdict: FakeVerdict, *, unreadable: str = "") -> None:
        self.verdict = verdict
        self.unreadable = unreadable
        self.config = SimpleNamespace(duration=10.0)
        self.runs: list[dict[str, Any]] = []

    def check(self, backend: str) -> None:
        if self.unreadable:
            raise AnalysisError(self.unreadable)

    preflight = Soaks.preflight  # the real refusal, around this fake's check

    def run(self, *, version: str, backend: str, new: Any, old: Any,
            stopped: threading.Event | None = None) -> FakeVerdict:
        self.runs.append({"version": version, "backend": backend, "new": list(new), "old": list(old)})
        return self.verdict


def env(tmp_path: Path, after_soak: str = "keep") -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({
        "inventory": tmp_path / "inventory.yml", "group": "hello_nodes",
        "app": {"name": "hello"}, "store": {"url": "http://127.0.0.1:1/"},
        "trusted_keys": [tmp_path / "release.pub"],
        "load_balancer": {"socket": "/run/haproxy.sock", "backend": "hello_blue", "legs_map": MAP},
        "strategy": {
            "kind": "blue-green", "preview_url": "http://127.0.0.1:2/", "after_soak": after_soak,
            "legs": {"blue": {"group": "hello_blue", "backend": "hello_blue"},
                     "green": {"group": "hello_green", "backend": "hello_green"}},
        },
    })


def make(tmp_path: Path, *, soak: Any = None, preview: int = 200, after_soak: str = "keep",
         live: str = "hello_blue") -> tuple[BlueGreen, FakeLoadBalancer, dict[str, FakeLeg]]:
    lb = FakeLoadBalancer("hello", [])
    lb.add_backend("hello_blue", ["node1", "node2"])
    lb.add_backend("hello_green", ["node3", "node4"])
    lb.set_route(MAP, "live", live)
    lb.changes.clear()
    legs = {"blue": FakeLeg(["node1", "node2"], "1.0.0", lb, "hello_blue"),
            "green": FakeLeg(["node3", "node4"], "1.0.0", lb, "hello_green")}

    def verify(version: str) -> Release:
        return Release(app="hello", version=version, url=f"http://x/{version}", sha256="0" * 64, size=1)

    def get(url: str, timeout: float) -> tuple[int, bytes]:
        version = legs["green" if lb.route(MAP, "preview") == "hello_green" else "blue"].version
        return preview, f'{{"version": "{version}"}}'.encode()

    bg = BlueGreen(env_name="lab", env=env(tmp_path, after_soak), leg_engines=legs,  # type: ignore[arg-type]
                   journal=Journal(tmp_path / "journal.sqlite"), verify_release=verify, lb=lb,
                   soaks=soak, preview_get=get)
    return bg, lb, legs


def live_switches(lb: FakeLoadBalancer) -> list[str]:
    return [backend for key, backend in lb.changes if key == f"{MAP}:live"]


def test_the_release_goes_to_the_idle_leg_and_live_traffic_moves_in_one_operation(tmp_path: Path) -> None:
    bg, lb, legs = make(tmp_path)
    outcome = bg.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert (legs["green"].steps, legs["blue"].steps) == (["1.1.0"], [])
    assert live_switches(lb) == ["hello_green"]
    assert lb.route(MAP, "preview") == "hello_blue"  # the old leg is now the preview
    assert [c for c in lb.changes if not c[0].startswith(MAP)] == []  # no server state touched


def test_uplift_releases_to_the_old_leg_after_the_soak(tmp_path: Path) -> None:
    bg, _lb, legs = make(tmp_path, after_soak="uplift")
    assert bg.deploy("1.1.0").status == "succeeded"
    assert (legs["green"].steps, legs["blue"].steps) == (["1.1.0"], ["1.1.0"])


def test_a_breached_soak_switches_back_at_once_and_restores_the_idle_leg(tmp_path: Path) -> None:
    soaks = FakeSoaks(FakeVerdict(True, "analysis failed: http_5xx_share 100% > 1% over 10 s"))
    bg, lb, legs = make(tmp_path, soak=soaks)
    outcome = bg.deploy("1.3.0-errors")
    assert outcome.status == "rolled_back"
    assert "http_5xx_share 100%" in outcome.summary and "switched back to blue" in outcome.summary
    assert live_switches(lb) == ["hello_green", "hello_blue"]
    assert soaks.runs == [{"version": "1.3.0-errors", "backend": "hello_green",
                           "new": ["node3", "node4"], "old": []}]
    assert legs["green"].steps == ["1.3.0-errors", "1.0.0"]  # put back on its release
    assert [s["back"] for s in outcome.details["blue_green"]["switches"]] == [False, True]


def test_a_passed_soak_keeps_the_new_leg_live(tmp_path: Path) -> None:
    bg, lb, _legs = make(tmp_path, soak=FakeSoaks(FakeVerdict(False, "analysis passed")))
    outcome = bg.deploy("1.1.0")
    assert outcome.status == "succeeded"
    assert live_switches(lb) == ["hello_green"]
    assert outcome.details["blue_green"]["soak"]["outcome"] == "passed"


def test_an_unreadable_metric_source_refuses_before_anything(tmp_path: Path) -> None:
    soaks = FakeSoaks(FakeVerdict(False, ""), unreadable="Prometheus at 127.0.0.1:9 is unreachable")
    bg, lb, legs = make(tmp_path, soak=soaks)
    outcome = bg.deploy("1.1.0")
    assert outcome.status == "refused" and "Prometheus" in outcome.summary
    assert lb.changes == [] and legs["green"].steps == []


def test_a_leg_failing_its_preview_smoke_never_takes_live_traffic(tmp_path: Path) -> None:
    bg, lb, legs = make(tmp_path, preview=503)
    outcome = bg.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    assert "preview route" in outcome.summary and "live traffic was not moved" in outcome.summary
    assert live_switches(lb) == []
    assert legs["green"].steps == ["1.1.0", "1.0.0"]


def test_a_failed_idle_leg_leaves_live_traffic_where_it_was(tmp_path: Path) -> None:
    bg, lb, legs = make(tmp_path)
    legs["green"].fail_with = "smoke check failed on node3"
    outcome = bg.deploy("1.2.0-badhealth")
    assert outcome.status == "rolled_back"
    assert "live traffic stayed on blue" in outcome.summary
    assert live_switches(lb) == []


def test_live_traffic_not_on_a_leg_is_refused_before_anything(tmp_path: Path) -> None:
    bg, lb, legs = make(tmp_path, live="hello_old")
    outcome = bg.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "not on one of the legs" in outcome.summary
    assert lb.changes == [] and legs["green"].steps == []
    with pytest.raises(DeploymentRefused):
        bg.live_leg()


def test_rollback_to_the_release_the_idle_leg_holds_is_one_switch(tmp_path: Path) -> None:
    bg, lb, legs = make(tmp_path)
    assert bg.deploy("1.1.0").status == "succeeded"
    lb.changes.clear()
    assert bg.rollback_target() == "1.0.0"
    outcome = bg.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded" and outcome.nodes == {}
    assert live_switches(lb) == ["hello_blue"]
    assert legs["blue"].steps == []


def test_a_deployment_that_lost_its_lock_does_not_switch_live_traffic(tmp_path: Path) -> None:
    from deployer import LockLostError
    from deployer.adapters.lock import EnvironmentLock, FakeLockHost, Lease
    from deployer.adapters.process import Identity

    host = FakeLockHost()
    bg, lb, legs = make(tmp_path)
    bg.lock = EnvironmentLock(host, "lab", lease=60)
    intruder = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))

    def taken_over(lease: Lease) -> None:
        intruder.remove(by="ops@far", reason="presumed dead", force=True)
        intruder.acquire()
        lease.renew_once()

    legs["green"].during = taken_over
    with pytest.raises(LockLostError, match="ci@far"):
        bg.deploy("1.1.0")
    assert legs["green"].steps == ["1.1.0"] and live_switches(lb) == []
    assert bg.journal.deployments("lab")[0].status == "failed"
