"""The blue-green strategy through the engine's lifecycle, with fakes at the seams only: the
runner replays each leg's runs, the load balancer (routes, servers, and the `show stat` counters
a real soak reads) lives in memory, and the soak analysis is the real one on a clock that moves
only when it waits. The real thing, on the lab: tests/e2e/test_blue_green.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import LEGS, MAP, Deployment

from deployer import ConfigError, DeploymentRefused, LockLostError
from deployer.adapters.lock import EnvironmentLock
from deployer.adapters.process import Identity
from deployer.analysis import parse_analysis_config
from deployer.engine.bluegreen import BlueGreen
from deployer.engine.events import SafePointReached, SoakRound, TrafficSwitched
from deployer.engine.lifecycle import raise_for
from deployer.engine.soaking import Soaks
from deployer.testing import (
    FakeClock,
    FakeLockHost,
    ReplayRunner,
    RunScript,
    bad_batch,
    good_batch,
    revert_batch,
    survey,
)

Make = Callable[..., Deployment]
BLUE, GREEN = LEGS["blue"], LEGS["green"]


def release(leg: list[str], frm: str = "1.0.0") -> list[RunScript]:
    """A leg's release: pre-stage every node (each on ``frm``), then one batch of all."""
    return [survey(dict.fromkeys(leg, frm)), good_batch(leg)]


def put_back(leg: list[str], on: str = "1.1.0") -> list[RunScript]:
    """A leg put back on its earlier release: read (each on ``on``), then one batch of all."""
    return [survey(dict.fromkeys(leg, on)), good_batch(leg)]


def versions(**legs: str) -> Callable[[str], str]:
    """What the preview route answers, by the backend it points at."""
    return lambda backend: legs.get(backend.removeprefix("hello_"), "?")


def soaks(lb: Any, *, errors: dict[str, tuple[int, int]] | None = None) -> Soaks:
    """The real soak analysis over the fake load balancer's counters (HAProxy's `show stat`):
    each round, every server of the new leg answers 100 requests, ``errors`` of them 5xx."""
    lb.traffic = {n: (100, 0) for n in BLUE + GREEN} | (errors or {})
    config = parse_analysis_config({
        "duration": 6, "interval": 1, "window": 3, "failure_limit": 2, "min_samples": 10,
        "rules": [{"indicator": "http_5xx_share", "max": "1%"}],
    })
    return Soaks(config, runtime=lb, env_name="lab", clock=FakeClock())


def live_switches(d: Deployment) -> list[str]:
    return [backend for key, backend in d.lb.changes if key == f"{MAP}:live"]


def playbooks(d: Deployment) -> list[tuple[str, list[str]]]:
    return [(r.playbook, list(r.hosts)) for r in d.runner.requests]


def test_the_release_goes_to_the_idle_leg_and_live_traffic_moves_in_one_operation(bluegreen: Make) -> None:
    d = bluegreen(release(GREEN), preview_version=versions(green="1.1.0"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert playbooks(d) == [("prestage.yml", GREEN), ("deploy_batch.yml", GREEN)]
    assert live_switches(d) == ["hello_green"]
    assert d.lb.route(MAP, "preview") == "hello_blue"  # the old leg is now the preview
    assert [c for c in d.lb.changes if not c[0].startswith(MAP)] == []  # no server state touched
    points = [e.point for e in d.recorder.of(SafePointReached)]
    assert points == ["admission", "before_start", "before_idle_leg", "before_switch", "after_outcome"]


def test_uplift_goes_to_the_end_of_the_path(bluegreen: Make) -> None:
    """After a good soak the old leg receives the release, is smoked through the preview
    route, takes live traffic back and is soaked again; only then has the release succeeded."""
    d = bluegreen([*release(GREEN), *release(BLUE)], preview_version=versions(green="1.1.0", blue="1.1.0"),
                  strategy={"after_soak": "uplift"})
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert playbooks(d) == [("prestage.yml", GREEN), ("deploy_batch.yml", GREEN),
                            ("prestage.yml", BLUE), ("deploy_batch.yml", BLUE)]
    assert live_switches(d) == ["hello_green", "hello_blue"]
    assert "blue uplifted to 1.1.0, smoked, soaked and live again" in outcome.summary
    points = [e.point for e in d.recorder.of(SafePointReached)]
    assert points == ["admission", "before_start", "before_idle_leg", "before_switch", "before_uplift",
                      "before_switch", "after_outcome"]


def test_an_uplifted_leg_breaching_its_soak_sends_traffic_back_to_the_proven_leg(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN), *release(BLUE), *put_back(BLUE)],
                  preview_version=versions(green="1.1.0", blue="1.1.0"), strategy={"after_soak": "uplift"},
                  soaks=soaks)
    # Blue errs once it is live again (green, proven, stays clean).
    d.recorder.on[TrafficSwitched] = lambda ev: d.lb.traffic.update(
        {n: (100, 40) for n in BLUE}) if ev.to_leg == "blue" and not ev.back else None
    outcome = d.deploy("1.1.0")
    assert outcome.status == "failed", outcome.summary
    assert live_switches(d) == ["hello_green", "hello_blue", "hello_green"]
    assert "the uplifted blue failed its soak" in outcome.summary
    assert "switched back to green, which stays live on 1.1.0" in outcome.summary
    assert playbooks(d)[-2:] == [("prestage.yml", BLUE), ("deploy_batch.yml", BLUE)]  # put back
    assert d.lb.route(MAP, "live") == "hello_green"


def test_a_breached_soak_switches_back_at_once_and_restores_the_idle_leg(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN), *put_back(GREEN, on="1.2.0-badhealth")],
                  preview_version=versions(green="1.2.0-badhealth"),
                  soaks=lambda lb: soaks(lb, errors={n: (100, 50) for n in GREEN}))
    outcome = d.deploy("1.2.0-badhealth")
    assert outcome.status == "rolled_back", outcome.summary
    assert "http_5xx_share 50% > 1% over the last 2 s (400 requests)" in outcome.summary
    assert "switched back to blue" in outcome.summary
    assert live_switches(d) == ["hello_green", "hello_blue"]
    assert d.runner.requests[-1].extravars["deployer_version"] == "1.0.0"  # green put back
    assert [s["back"] for s in outcome.details["blue_green"]["switches"]] == [False, True]
    # Every round of the soak is an event, with each rule's value and threshold.
    rounds = d.recorder.of(SoakRound)
    assert rounds and rounds[0].results[0]["indicator"] == "http_5xx_share"
    assert rounds[0].results[0]["threshold"] == 0.01 and rounds[-1].results[0]["value"] == 0.5


def test_a_passed_soak_keeps_the_new_leg_live(bluegreen: Make) -> None:
    d = bluegreen(release(GREEN), preview_version=versions(green="1.1.0"), soaks=soaks)
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert live_switches(d) == ["hello_green"]
    assert outcome.details["blue_green"]["soak"]["outcome"] == "passed"


def test_an_unreadable_metric_source_refuses_before_anything(bluegreen: Make) -> None:
    d = bluegreen([], soaks=soaks)
    d.lb.command = _unreachable  # type: ignore[method-assign]
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused" and "soak analysis cannot start" in outcome.summary
    assert d.lb.changes == [] and d.runner.requests == []


def _unreachable(line: str) -> str:
    from deployer import LoadBalancerError

    raise LoadBalancerError("cannot reach the HAProxy runtime API at lb1: connection refused")


def test_a_leg_failing_its_preview_smoke_never_takes_live_traffic(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN), *put_back(GREEN)], preview_version=versions(green="1.0.9"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back"
    assert "preview route" in outcome.summary and "live traffic was not moved" in outcome.summary
    assert "reports version '1.0.9', not 1.1.0" in outcome.summary
    assert live_switches(d) == []
    released = [r.extravars["deployer_version"] for r in d.runner.requests]
    assert released == ["1.1.0", "1.1.0", "1.0.0", "1.0.0"]


def test_a_failed_idle_leg_leaves_live_traffic_where_it_was(bluegreen: Make) -> None:
    failing = ("deploy_batch.yml", bad_batch("node3")[1] + good_batch(["node4"])[1], "failed")
    d = bluegreen([survey(dict.fromkeys(GREEN, "1.0.0")), failing, revert_batch(["node4"])])
    outcome = d.deploy("1.2.0-badhealth")
    assert outcome.status == "rolled_back", outcome.summary
    assert "live traffic stayed on blue" in outcome.summary
    assert live_switches(d) == []
    assert outcome.nodes["node3"].phase.value == "reverted"


def test_live_traffic_not_on_a_leg_is_refused_before_anything(bluegreen: Make) -> None:
    d = bluegreen([])
    d.lb.set_route(MAP, "live", "hello_old")
    d.lb.changes.clear()
    outcome = d.deploy("1.1.0")
    assert outcome.status == "refused"
    assert "not on one of the legs" in outcome.summary
    assert d.lb.changes == [] and d.runner.requests == []
    with pytest.raises(DeploymentRefused):
        raise_for(outcome)


def test_rollback_to_the_release_the_idle_leg_holds_is_one_switch(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN), survey(dict.fromkeys(BLUE, "1.0.0"), playbook="probe.yml")],
                  preview_version=versions(green="1.1.0", blue="1.0.0"))
    assert d.deploy("1.1.0").status == "succeeded"
    d.lb.changes.clear()
    assert d.lifecycle.rollback_target() == "1.0.0"  # from the history
    outcome = d.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert live_switches(d) == ["hello_blue"]
    assert [r.playbook for r in d.runner.requests][-1] == "probe.yml"  # read, not deployed


def test_without_history_rollback_goes_to_what_the_idle_leg_holds(bluegreen: Make) -> None:
    """BlueGreen.rollback_target itself: no successful deployment in the journal, so the idle
    leg's single release, when it differs from the live leg's."""
    d = bluegreen([survey(dict.fromkeys(GREEN, "0.9.0"), playbook="probe.yml"),
                   survey(dict.fromkeys(BLUE, "1.0.0"), playbook="probe.yml")])
    strategy = d.lifecycle.strategy
    assert isinstance(strategy, BlueGreen)
    assert strategy.rollback_target() == "0.9.0"
    d2 = bluegreen([survey(dict.fromkeys(GREEN, "1.0.0"), playbook="probe.yml"),
                    survey(dict.fromkeys(BLUE, "1.0.0"), playbook="probe.yml")])
    with pytest.raises(ConfigError, match="no earlier release"):
        d2.lifecycle.rollback_target()


def test_a_deployment_that_lost_its_lock_does_not_switch_live_traffic(bluegreen: Make) -> None:
    host = FakeLockHost()
    intruder = EnvironmentLock(host, "lab", me=Identity("ci@far", "far", 1, "1"))

    class TakenOverWhileTheLegRolls(ReplayRunner):
        def run(self, request: Any, on_event: Any, cancelled: Any) -> Any:
            result = super().run(request, on_event, cancelled)
            if request.playbook == "deploy_batch.yml":
                intruder.remove(by="ops@far", reason="presumed dead", force=True)
                intruder.acquire()
            return result

    d = bluegreen(TakenOverWhileTheLegRolls(release(GREEN)), preview_version=versions(green="1.1.0"),
                  lock=EnvironmentLock(host, "lab", lease=60))
    outcome = d.deploy("1.1.0")
    with pytest.raises(LockLostError, match="ci@far"):
        raise_for(outcome)
    assert live_switches(d) == []
    assert d.journal.deployments("lab")[0].status == "stopped"


def test_a_node_config_with_overlapping_legs_is_refused(world: dict[str, Path], bluegreen: Make) -> None:
    config = world["bg_config"]
    config.write_text(config.read_text().replace("green: {group: hello_green", "green: {group: hello_nodes"))
    with pytest.raises(ConfigError, match="in both legs"):
        bluegreen([])
