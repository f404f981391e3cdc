"""Soak analysis on a quiet fleet, through the CLI on the lab: no load generator, and an
``analysis:`` section like the README's example (5xx rule and comparison, ``min_samples: 20``,
``no_data: inconclusive``, no further smoke tests), so nothing sends the rules any requests.

``plan`` warns that the rules cannot get their samples; a deployment fails for want of data
with a hint naming ``analysis.no_data`` and the further smoke tests (or passes with
``no_data: pass``); and ``rollback`` to a release that ran here before is not soaked, so it
succeeds and leaves every node on one release (it used to fail its soak half-way, leaving
the fleet mixed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from lab_cli import configured, deployer, fleet

from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def readme_analysis(lab: Lab, **changes: Any) -> dict[str, Any]:
    return {
        "when": "after_canary",
        "target_url": lab.frontend_url,
        "duration": 20, "interval": 1, "window": 10, "failure_limit": 2, "min_samples": 20,
        "no_data": "inconclusive", "inconclusive_limit": 3,
        "rules": [{"indicator": "http_5xx_share", "max": "1%"}],
        "compare": [{"indicator": "http_5xx_share", "max_margin": "1%"}],
        **changes,
    }


def test_a_quiet_fleet_warns_fails_for_want_of_data_and_rolls_back_unsoaked(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    quiet = configured(lab, "quiet.yml", analysis=readme_analysis(lab))
    nodes = ("node1", "node2")

    # plan: the rules would see no requests; a warning, not a refusal.
    plan = deployer(quiet, "plan", "--env", "lab", "--version", "1.1.0", "--json")
    assert plan.returncode == 0, plan.stderr
    (warning,) = json.loads(plan.stdout)["warnings"]
    assert "cannot get enough requests at the current traffic" in warning, warning
    assert "answers 0 requests/s now" in warning and "(min_samples 20)" in warning, warning
    assert "fails the release after 3 such rounds in a row" in warning, warning
    text = deployer(quiet, "plan", "--env", "lab", "--version", "1.1.0")
    assert text.returncode == 0 and "warning: the soak's rules cannot get enough" in text.stdout

    # deploy: fails its soak for want of data, rolled back; the hint says what to set.
    failed = deployer(quiet, "deploy", "--env", "lab", "--version", "1.1.0")
    assert failed.returncode == 10, failed.stderr
    assert "failed its soak after batch 1" in failed.stderr, failed.stderr
    hint = next(line for line in failed.stderr.splitlines() if line.startswith("deployer: hint:"))
    assert "analysis.no_data: pass" in hint and "analysis.smoke" in hint, hint
    assert fleet(lab) == dict.fromkeys(nodes, ("1.0.0", "UP"))

    # With no_data: pass the same release goes through.
    passing = configured(lab, "quiet-pass.yml", analysis=readme_analysis(lab, no_data="pass", duration=3))
    done = deployer(passing, "deploy", "--env", "lab", "--version", "1.1.0")
    assert done.returncode == 0, done.stderr
    assert fleet(lab) == dict.fromkeys(nodes, ("1.1.0", "UP"))

    # rollback (the quiet config again): 1.0.0 ran here before, so it is not soaked.
    back = deployer(quiet, "rollback", "--env", "lab", "--json")
    assert back.returncode == 0, back.stderr
    assert "not soaking: a rollback to 1.0.0, which ran here before" in back.stderr, back.stderr
    outcome = json.loads(back.stdout)
    assert outcome["status"] == "succeeded" and outcome["version"] == "1.0.0", outcome
    assert fleet(lab) == dict.fromkeys(nodes, ("1.0.0", "UP"))
