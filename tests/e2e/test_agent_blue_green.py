"""The runner of a blue-green environment, on a lab with two legs: a new pointer value goes live
on the idle leg in one switch, and an operator's rollback (the earlier version written to the
pointer) is one switch back, touching no node, while the lab's traffic never fails."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lab_cli import deployer, journal

from deployer.lab import Lab
from deployer.lab._load import LoadGenerator

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def once(config: Path) -> tuple[int, list[dict[str, Any]]]:
    r = deployer(config, "agent", "--env", "lab", "--once")
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def set_pointer(config: Path, version: str, reason: str) -> None:
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", version, "--reason", reason)
    assert r.returncode == 0, r.stderr


def legs(lab: Lab) -> tuple[str | None, dict[str, set[str | None]]]:
    status = lab.status()
    by_leg: dict[str, set[str | None]] = {}
    for node in status.nodes:
        by_leg.setdefault(node.leg or "", set()).add(node.app_version)
    return status.live_leg, by_leg


def test_an_operators_rollback_by_pointer_is_one_switch_on_blue_green(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=1, legs=True, seed="1.0.0")
    config = lab.config_path
    load = LoadGenerator(lab.frontend_url, concurrency=4, max_requests=20_000, max_seconds=200)
    load.start()
    try:
        set_pointer(config, "1.1.0", "release train 49")
        code, lines = once(config)
        assert code == 0
        assert [(e["from_leg"], e["to_leg"]) for e in lines if e["type"] == "switch"] == [("blue", "green")]
        assert legs(lab) == ("green", {"blue": {"1.0.0"}, "green": {"1.1.0"}})
        status = json.loads((lab.dir / "pointer" / "lab.status.json").read_text())
        # What runs is the live leg's release: the idle one holding 1.0.0 is the fallback.
        assert (status["decision"], status["running"]) == ("deployed", "1.1.0")
        assert status["versions"] == {"1.1.0": 1}

        # 3 a.m.: the operator writes the earlier version; it runs as a rollback, one switch.
        set_pointer(config, "1.0.0", "checkout errors")
        code, lines = once(config)
        assert code == 0
        assert [(e["from_leg"], e["to_leg"]) for e in lines if e["type"] == "switch"] == [("green", "blue")]
        finished = next(e for e in lines if e["type"] == "deployment_finished")
        assert finished["status"] == "succeeded" and finished["nodes"] == {}  # no node touched
        assert not [e for e in lines if e["type"] == "node"]
        rollback = journal(lab).deployments("lab")[0]
        assert (rollback.kind, rollback.version) == ("rollback", "1.0.0")
        assert legs(lab) == ("blue", {"blue": {"1.0.0"}, "green": {"1.1.0"}})
        # Again: in sync, nothing deployed.
        code, lines = once(config)
        assert code == 0 and [e["decision"] for e in lines if e["type"] == "agent_decision"] == ["in_sync"]
        assert len(journal(lab).deployments("lab")) == 2
    finally:
        report = load.stop()
    assert report.failed == 0, report.line()
