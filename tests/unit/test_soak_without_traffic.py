"""Soak analysis on an environment without (enough) traffic, through the engine's lifecycle with
fakes at the seams only: the real soak analysis reads the fake load balancer's `show stat`
counters (``traffic``: what each server answers between two reads) on a clock that moves only
when it waits.

- a rollback to a release that already ran successfully here is not soaked (an emergency
  rollback is never blocked by missing traffic), unless ``analysis.on_rollback: soak``; a soaked
  rollback that breaches still goes on to every node, with a warning: the fleet ends on one
  release, rolling or blue-green;
- a deployment failing its soak for want of data says so, naming ``analysis.no_data`` and the
  further smoke tests;
- ``plan`` warns when the rules cannot get ``min_samples`` requests at the current traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from conftest import LEGS, MAP, NODES, Deployment

from deployer.analysis import parse_analysis_config
from deployer.engine.events import SoakStarted
from deployer.engine.lifecycle import exit_code_for
from deployer.engine.soaking import Soaks
from deployer.testing import (
    FakeClock,
    FakeLoadBalancer,
    RunScript,
    good_batch,
    revert_batch,
    survey,
)

Make = Callable[..., Deployment]
BLUE, GREEN = LEGS["blue"], LEGS["green"]
NO_DATA = "not soaking: a rollback to 1.0.0, which ran here before (analysis.on_rollback: skip)"


def analysis(traffic: int = 0, **config: Any) -> Callable[[FakeLoadBalancer], Soaks]:
    """The real soak analysis on the fake load balancer's counters: each server answers
    ``traffic`` requests between two reads (0: an environment without traffic); a 5xx rule
    over 3 s needing 10 requests, ``no_data: fail`` unless ``config`` says otherwise."""

    def make(lb: FakeLoadBalancer) -> Soaks:
        servers = [*NODES, *BLUE, *GREEN]
        lb.traffic = {n: (traffic, 0) for n in servers}
        parsed = parse_analysis_config({
            "duration": 6, "interval": 1, "window": 3, "failure_limit": 2, "min_samples": 10,
            "no_data": "fail", "rules": [{"indicator": "http_5xx_share", "max": "1%"}], **config,
        })
        return Soaks(parsed, runtime=lb, env_name="lab", clock=FakeClock())

    return make


def ran_before(d: Deployment, version: str, frm: str) -> None:
    """The journal: a successful deployment of ``version`` over nodes on ``frm``."""
    deployment = d.journal.start_deployment(env="lab", app="hello", kind="deploy", version=version,
                                            command="")
    d.journal.update_details(deployment, from_versions=dict.fromkeys(NODES, frm))
    d.journal.finish_deployment(deployment, "succeeded", "")


def every_node(version: str, frm: str) -> list[RunScript]:
    return [survey(dict.fromkeys(NODES, frm)), *(good_batch([n]) for n in NODES)]


# -- rolling ----------------------------------------------------------------------------------


def test_a_rollback_to_a_release_that_ran_here_is_not_soaked(deployment: Make) -> None:
    """Without traffic a soaked rollback fails for want of data (no_data: fail) and leaves the
    fleet mixed: the rollback is not soaked."""
    d = deployment(every_node("1.0.0", frm="1.1.0"), soaks=analysis(traffic=0))
    ran_before(d, "1.1.0", frm="1.0.0")
    outcome = d.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert {n: st.phase.value for n, st in outcome.nodes.items()} == dict.fromkeys(NODES, "done")
    assert d.recorder.of(SoakStarted) == []
    assert NO_DATA in d.recorder.messages


def test_a_soaked_rollback_that_breaches_goes_on_to_every_node(deployment: Make) -> None:
    d = deployment(every_node("1.0.0", frm="1.1.0"),
                   soaks=analysis(traffic=0, on_rollback="soak"))
    ran_before(d, "1.1.0", frm="1.0.0")
    outcome = d.deploy("1.0.0", kind="rollback")
    assert d.recorder.of(SoakStarted)  # soaked, as configured
    assert outcome.status == "succeeded", outcome.summary
    assert {n: st.phase.value for n, st in outcome.nodes.items()} == dict.fromkeys(NODES, "done")
    assert exit_code_for(outcome) == 0
    assert any(w.startswith("the rollback's soak after batch 1 breached: analysis failed")
               and "the rollback went on to every node" in w for w in outcome.warnings), outcome.warnings


def test_a_rollback_to_a_release_that_never_ran_here_is_soaked(deployment: Make) -> None:
    d = deployment(every_node("1.0.0", frm="1.1.0"), soaks=analysis(traffic=100))
    outcome = d.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert d.recorder.of(SoakStarted) and NO_DATA not in d.recorder.messages


def test_a_soak_failing_for_want_of_data_names_the_setting_and_the_smoke_tests(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]),
                    revert_batch(["node1"])], soaks=analysis(traffic=0))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert "1.1.0 failed its soak after batch 1" in outcome.summary
    assert "analysis.no_data: pass" in outcome.hint and "analysis.smoke" in outcome.hint
    assert "analysis.min_samples" in outcome.hint
    assert exit_code_for(outcome) == 10


# -- blue-green -------------------------------------------------------------------------------


def preview(**legs: str) -> Callable[[str], str]:
    return lambda backend: legs.get(backend.removeprefix("hello_"), "?")


def release(leg: list[str], frm: str) -> list[RunScript]:
    return [survey(dict.fromkeys(leg, frm)), good_batch(leg)]


def test_a_blue_green_rollback_to_a_release_that_ran_here_is_one_unsoaked_switch(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN, "1.0.0"), survey(dict.fromkeys(BLUE, "1.0.0"), playbook="probe.yml")],
                  preview_version=preview(green="1.1.0", blue="1.0.0"), soaks=analysis(traffic=100))
    assert d.deploy("1.1.0").status == "succeeded"
    assert len(d.recorder.of(SoakStarted)) == 1
    d.lb.traffic = {}  # the traffic is gone: a soak would fail for want of data
    outcome = d.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert len(d.recorder.of(SoakStarted)) == 1  # the deployment's, none for the rollback
    assert NO_DATA in d.recorder.messages
    assert d.lb.route(MAP, "live") == "hello_blue"


def test_a_soaked_blue_green_rollback_that_breaches_keeps_live_traffic_on_it(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN, "1.0.0"), survey(dict.fromkeys(BLUE, "1.0.0"), playbook="probe.yml")],
                  preview_version=preview(green="1.1.0", blue="1.0.0"),
                  soaks=analysis(traffic=100, on_rollback="soak"))
    assert d.deploy("1.1.0").status == "succeeded"
    d.lb.traffic.update({n: (100, 50) for n in BLUE})  # the release escaped to errs too
    outcome = d.deploy("1.0.0", kind="rollback")
    assert outcome.status == "succeeded", outcome.summary
    assert len(d.recorder.of(SoakStarted)) == 2
    assert d.lb.route(MAP, "live") == "hello_blue"  # not switched back to the release left
    assert any(w.startswith("the rollback's soak of blue breached") for w in outcome.warnings)


def test_a_blue_green_soak_failing_for_want_of_data_names_the_setting(bluegreen: Make) -> None:
    d = bluegreen([*release(GREEN, "1.0.0"), survey(dict.fromkeys(GREEN, "1.1.0")), good_batch(GREEN)],
                  preview_version=preview(green="1.1.0"), soaks=analysis(traffic=0))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    assert "switched back to blue" in outcome.summary
    assert "analysis.no_data: pass" in outcome.hint and "analysis.smoke" in outcome.hint


# -- plan -------------------------------------------------------------------------------------


def plan_warnings(d: Deployment, version: str = "1.1.0") -> tuple[str, ...]:
    plan = d.lifecycle.plan(version)
    assert plan.exit_code == 0, plan.refusals  # a warning, not a refusal
    return plan.warnings


def probe(nodes: Mapping[str, str] | list[str], version: str = "1.0.0") -> RunScript:
    return survey(dict.fromkeys(nodes, version), playbook="probe.yml")


def test_plan_warns_when_the_rules_cannot_get_min_samples_at_the_current_traffic(deployment: Make) -> None:
    # Each of 3 servers answers 1 request a second: 3 requests/s, ~9 in the 3 s window < 10.
    (warning,) = plan_warnings(deployment([probe(NODES)], soaks=analysis(traffic=1)))
    assert "the backend hello answers 3 requests/s now" in warning
    assert "http_5xx_share" in warning and "~9 in its 3s window (min_samples 10)" in warning
    assert "analysis.no_data: fail, so the soak fails the release" in warning
    assert "analysis.smoke" in warning
    # Enough traffic: no warning.
    assert plan_warnings(deployment([probe(NODES)], soaks=analysis(traffic=100))) == ()
    # Without traffic at all, as the policy says.
    (quiet,) = plan_warnings(deployment([probe(NODES)], soaks=analysis(traffic=0, no_data="pass")))
    assert "0 requests/s" in quiet and "such rounds pass without judging the release" in quiet


def test_plan_counts_the_share_of_traffic_the_soaked_servers_get(deployment: Make) -> None:
    """A rule on the new servers sees the canary's share only (1 of 3 servers): at 6
    requests/s, 18 in the window for the whole backend but ~6 for the canary."""
    rules = [{"indicator": "http_5xx_share", "max": "1%"},
             {"indicator": "http_5xx_share", "max": "1%", "group": "new", "name": "canary 5xx"}]
    (warning,) = plan_warnings(deployment([probe(NODES)], soaks=analysis(traffic=2, rules=rules)))
    assert "canary 5xx would see ~6 in its 3s window" in warning
    assert "http_5xx_share would see" not in warning


def test_the_warning_is_in_the_deployments_messages_too(deployment: Make) -> None:
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")), good_batch(["node1"]),
                    good_batch(["node2"]), good_batch(["node3"])],
                   soaks=analysis(traffic=0, no_data="pass"))
    outcome = d.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert any("cannot get enough requests at the current traffic" in m for m in d.recorder.messages)


def test_a_blue_green_plan_reads_the_live_legs_traffic(bluegreen: Make) -> None:
    (warning,) = plan_warnings(bluegreen([probe(GREEN)], soaks=analysis(traffic=0, no_data="inconclusive",
                                                                       inconclusive_limit=3)))
    assert "the backend hello_blue answers 0 requests/s now" in warning
    assert "fails the release after 3 such rounds in a row" in warning
    assert plan_warnings(bluegreen([probe(GREEN)], soaks=analysis(traffic=100))) == ()
