"""Soak analysis inside real deployments on the lab: the sample service's 1.3.0-errors passes its
smoke check (healthy at start) and then answers 500; the soak catches it, in rolling (after the
canary batch) and in blue-green (after the switch), and the fleet ends on the release it had.
Counts and outcomes only, never timings (those are in bench/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._load import LoadGenerator, LoadReport

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(config)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "COLUMNS": "200"},
    )


def deploy(config: Path, version: str) -> tuple[int, dict[str, Any]]:
    proc = cli(config, "deploy", "--version", version, "--json")
    start = proc.stdout.find("{")
    assert start >= 0, proc.stdout + proc.stderr
    return proc.returncode, json.loads(proc.stdout[start:])


def under_load(lab: Lab, action: Callable[[], Any]) -> tuple[LoadReport, Any]:
    load = LoadGenerator(lab.frontend_url, concurrency=4, max_requests=100_000, max_seconds=120).start()
    try:
        time.sleep(0.3)
        result = action()
    finally:
        report = load.stop()
    return report, result


def versions(config: Path) -> dict[str, str]:
    proc = cli(config, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {n["node"]: n["version"] for n in json.loads(proc.stdout)["nodes"]}


def events(config: Path, deployment: int) -> list[dict[str, Any]]:
    proc = cli(config, "history", "--json", "--deployment", str(deployment))
    return list(json.loads(proc.stdout)["events"])


def edited(lab: Lab, name: str, analysis: dict[str, Any]) -> Path:
    data = yaml.safe_load(lab.config_path.read_text())
    data["environments"]["lab"]["analysis"].update(analysis)
    path = lab.dir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_rolling_a_release_failing_after_its_smoke_check_is_caught_by_the_canary_soak(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", soak=15)
    report, (rc, outcome) = under_load(lab, lambda: deploy(lab.config_path, "1.3.0-errors"))
    assert rc == 10, outcome
    assert outcome["status"] == "rolled_back"
    summary = outcome["summary"]
    assert "failed its soak after batch 1" in summary and "detected at" in summary, summary
    assert versions(lab.config_path) == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    soak = [e for e in events(lab.config_path, outcome["deployment"]) if e["node"] == "analysis"]
    assert [e["phase"] for e in soak] == ["soak_failed"]
    # Caught by the 5xx rule or by the further smoke test of `/`, whichever saw it first.
    assert soak[0]["detail"].startswith("after batch 1: analysis failed: "), soak[0]["detail"]
    assert "500" in soak[0]["detail"] or "http_5xx_share" in soak[0]["detail"]
    # Only the canary ever served the bad release, and only until the soak caught it.
    assert report.versions.get("1.3.0-errors", 0) + report.failed > 0, report.line()
    assert report.nodes and report.failed < report.sent / 3, report.line()


def test_a_good_release_passes_its_soak_and_goes_everywhere(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=4)
    report, (rc, outcome) = under_load(lab, lambda: deploy(lab.config_path, "1.1.0"))
    assert rc == 0 and outcome["status"] == "succeeded", outcome
    assert report.failed == 0, report.line()
    assert versions(lab.config_path) == {"node1": "1.1.0", "node2": "1.1.0"}
    soaks = [e for e in events(lab.config_path, outcome["deployment"]) if e["node"] == "analysis"]
    # The canary's soak, then the watch kept while the second batch rolled.
    assert [(e["phase"], e["detail"].split(":")[0]) for e in soaks] == [
        ("soaked", "after batch 1"), ("soaked", "while the later batches rolled")]


def test_a_failing_further_smoke_command_fails_the_release(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=6)
    check = lab.dir / "check-cart.sh"
    check.write_text('#!/bin/sh\necho "cart empty on $DEPLOYER_VERSION at $DEPLOYER_TARGET_URL"\nexit 3\n')
    check.chmod(0o755)
    config = edited(lab, "smoke-command.yml", {"smoke": {
        "interval": 1, "commands": [{"run": [str(check)], "name": "cart", "timeout": 10}]}})
    rc, outcome = deploy(config, "1.1.0")
    assert rc == 10 and outcome["status"] == "rolled_back", outcome
    assert "cart" in outcome["summary"] and "cart empty on 1.1.0" in outcome["summary"], outcome
    assert versions(config) == {"node1": "1.0.0", "node2": "1.0.0"}


def test_no_data_counts_as_configured(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=5)
    quiet = {"smoke": {"http": []}, "inconclusive_limit": 2}
    passing = edited(lab, "no-data-pass.yml", {**quiet, "no_data": "pass"})
    rc, outcome = deploy(passing, "1.1.0")
    assert rc == 0, outcome  # no traffic, no data: passes as configured
    failing = edited(lab, "no-data-inconclusive.yml", {**quiet, "no_data": "inconclusive"})
    rc, outcome = deploy(failing, "1.0.0")
    assert rc == 10 and outcome["status"] == "rolled_back", outcome
    assert "no conclusive data in 2 rounds in a row" in outcome["summary"], outcome
    assert versions(lab.config_path) == {"node1": "1.1.0", "node2": "1.1.0"}


def test_a_rule_on_a_real_prometheus_and_one_that_cannot_start(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=20, prometheus=True)
    prometheus = lab.status().prometheus_url
    assert prometheus
    rule = {
        "sources": {"haproxy": None, "prometheus": {"url": prometheus, "queries": {
            "errors_per_s": 'sum(rate(haproxy_server_http_responses_total{proxy="hello",code="5xx"}[5s]))',
        }}},
        "rules": [{"source": "prometheus", "indicator": "errors_per_s", "max": 0.5}],
        "smoke": {"http": []}, "min_samples": 0,
    }
    config = edited(lab, "prometheus.yml", rule)
    _report, (rc, outcome) = under_load(lab, lambda: deploy(config, "1.3.0-errors"))
    assert rc == 10 and outcome["status"] == "rolled_back", outcome
    assert "errors_per_s" in outcome["summary"], outcome
    assert versions(config) == {"node1": "1.0.0", "node2": "1.0.0"}

    unreachable = edited(lab, "prometheus-down.yml", {
        **rule, "sources": {"haproxy": None, "prometheus": {
            "url": "http://127.0.0.1:9/", "queries": rule["sources"]["prometheus"]["queries"]}}})
    rc, outcome = deploy(unreachable, "1.1.0")
    assert rc == 9 and outcome["status"] == "refused", outcome  # nothing was touched
    assert "127.0.0.1:9" in outcome["summary"], outcome
    assert versions(config) == {"node1": "1.0.0", "node2": "1.0.0"}


def test_blue_green_switches_back_when_the_live_leg_fails_its_soak(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", legs=True, soak=15)
    report, (rc, outcome) = under_load(lab, lambda: deploy(lab.config_path, "1.3.0-errors"))
    assert rc == 10 and outcome["status"] == "rolled_back", outcome
    assert [s["back"] for s in outcome["blue_green"]["switches"]] == [False, True]
    assert "live traffic switched back to blue" in outcome["summary"]
    status = json.loads(cli(lab.config_path, "status", "--json").stdout)
    assert status["blue_green"]["live"] == "blue"
    assert {n["version"] for n in status["nodes"]} == {"1.0.0"}  # green put back on 1.0.0
    # Only requests in the window between the first 500 and the switch-back failed.
    assert 0 < report.failed < report.sent / 2, report.line()
