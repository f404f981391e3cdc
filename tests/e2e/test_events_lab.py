"""`--events` on real deployments: every line is one JSON object of the schema the README
documents (the unit tests hold the README's table to the code), numbered without a gap, naming
the deployment by the same global id as the journal, and telling the same node story as the
journal, soak rounds with each rule's value and threshold included."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lab_cli import configured, deployer, journal

from deployer.engine.events import EVENT_TYPES, SCHEMA_VERSION
from deployer.lab import Lab

pytestmark = pytest.mark.e2e

ENVELOPE = {"schema", "seq", "at", "type", "deployment"}


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_schema(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert e["schema"] == SCHEMA_VERSION
        fields = {f.name for f in dataclasses.fields(EVENT_TYPES[e["type"]])}
        assert set(e) == ENVELOPE | fields, e
        assert e["at"].endswith("Z") and len(e["at"]) == len("2026-12-07T10:00:01.250Z")


def test_a_rolling_deployment_streams_every_event_in_the_documented_schema(
    make_lab: Callable[..., Lab], tmp_path: Path,
) -> None:
    lab = make_lab(nodes=2, seed="1.0.0", soak=3)
    events_file = tmp_path / "events.jsonl"
    r = deployer(lab.config_path, "deploy", "--env", "lab", "--version", "1.1.0", "--events",
                 str(events_file))
    assert r.returncode == 0, r.stderr
    events = read_events(events_file)
    check_schema(events)
    record = journal(lab).deployments("lab", limit=1)[0]
    assert {json.dumps(e["deployment"], sort_keys=True) for e in events} == {json.dumps(
        {"id": record.id, "uid": record.uid, "env": "lab", "kind": "deploy", "version": "1.1.0"},
        sort_keys=True)}
    types = [e["type"] for e in events]
    assert types[0] == "deployment_started" and types[-1] == "deployment_finished"
    assert [e["phase"] for e in events if e["type"] == "phase"] == ["preflight", "plan", "steps",
                                                                    "outcome"]
    points = [e["point"] for e in events if e["type"] == "safe_point"]
    assert points == ["admission", "before_start", "before_batch", "before_batch", "after_outcome"]
    # The node story is the journal's, event for event.
    nodes = [(e["node"], e["phase"]) for e in events if e["type"] == "node"]
    recorded = [(ev.node, ev.phase) for ev in journal(lab).node_events(record.id)
                if ev.node.startswith("node")]
    assert nodes == recorded
    # The soak after the canary: each round names each rule's value and threshold.
    rounds = [e for e in events if e["type"] == "soak_round"]
    assert rounds and all(r["results"] for r in rounds)
    rule = rounds[-1]["results"][0]
    assert rule["indicator"] == "http_5xx_share" and rule["threshold"] == pytest.approx(0.01)
    assert rule["status"] in ("ok", "no_data", "breach")
    finished = events[-1]
    assert finished["status"] == "succeeded" and finished["exit_code"] == 0
    assert set(finished["nodes"]) == {"node1", "node2"}


def test_events_on_stdout_with_a_failed_release_and_its_rollback(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    config = configured(lab, "deployer-events.yml", analysis=None)
    r = deployer(config, "deploy", "--env", "lab", "--version", "1.2.0-badhealth", "--events", "-")
    assert r.returncode == 10, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    check_schema(events)
    node1 = [e["phase"] for e in events if e["type"] == "node" and e["node"] == "node1"]
    assert node1[-2:] == ["reverting", "reverted"]
    finished = events[-1]
    assert (finished["status"], finished["exit_code"]) == ("rolled_back", 10)
    assert "1.2.0-badhealth failed on node1" in finished["summary"]
    # --json and --events - would both write to stdout.
    both = deployer(config, "deploy", "--env", "lab", "--version", "1.1.0", "--events", "-", "--json")
    assert both.returncode == 2 and "--events -" in both.stderr
