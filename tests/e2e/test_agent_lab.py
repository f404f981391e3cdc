"""`deployer agent` on a lab of one environment with its file pointer (as every lab's config has
one), through the CLI: a pointer change starts a deployment and a repeat does nothing; an
earlier version written to the pointer runs as a rollback; a failure, a refused pointer value
and drift are published beside the pointer; `pointer set` refuses what the store does not hold;
an agent refuses any environment but its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lab_cli import all_serving, deployer, fleet, journal

from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def agent_once(config: Path, env: str = "lab") -> tuple[int, list[dict[str, Any]], str]:
    """One look of the environment's runner: its exit code, its JSON lines, its stderr."""
    r = deployer(config, "agent", "--env", env, "--once")
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return r.returncode, lines, r.stderr


def decisions(lines: list[dict[str, Any]]) -> list[str]:
    return [e["decision"] for e in lines if e["type"] == "agent_decision"]


def pointer_get(config: Path, env: str = "lab") -> dict[str, Any]:
    r = deployer(config, "pointer", "get", "--env", env, "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def set_pointer(config: Path, version: str, reason: str = "test") -> None:
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", version, "--reason", reason)
    assert r.returncode == 0, r.stderr


def test_the_runner_deploys_what_the_pointer_names_and_publishes_what_it_did(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    config = lab.config_path

    # Nothing asked yet: the runner waits, and says so beside the pointer.
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (0, ["waiting"])
    assert pointer_get(config)["status"]["running"] == "1.0.0"

    # `pointer set` refuses a release the store does not hold, writing nothing.
    r = deployer(config, "pointer", "set", "--env", "lab", "--version", "9.9.9", "--reason", "typo")
    assert r.returncode == 4 and "9.9.9" in r.stderr and "1.1.0" in r.stderr
    assert pointer_get(config)["desired"] is None

    # A pointer change starts a deployment; its events and the runner's are JSON lines.
    set_pointer(config, "1.1.0", reason="release train 49")
    code, lines, _ = agent_once(config)
    assert code == 0 and decisions(lines) == ["deployed"]
    types = [e["type"] for e in lines]
    assert types[0] == "agent_started" and types[-1] == "agent_stopped"
    assert "deployment_started" in types and "node" in types
    assert fleet(lab) == all_serving(lab, "1.1.0")
    got = pointer_get(config)
    status = got["status"]
    [record] = journal(lab).deployments("lab")
    assert (status["decision"], status["running"], status["deployment"]) == ("deployed", "1.1.0", record.uid)
    assert status["desired"]["reason"] == "release train 49"
    assert record.details["pointer"]["reason"] == "release train 49"

    # A repeat does nothing: no deployment, no history row, and the status stays as it was.
    before = (lab.dir / "pointer" / "lab.status.json").read_text()
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (0, ["in_sync"])
    assert "deployment_started" not in [e["type"] for e in lines]
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (0, ["in_sync"])
    assert len(journal(lab).deployments("lab")) == 1
    assert json.loads((lab.dir / "pointer" / "lab.status.json").read_text())["decision"] == "in_sync"
    assert before != (lab.dir / "pointer" / "lab.status.json").read_text()  # once: "in sync"

    # The operator's 3 a.m. rollback: write the earlier version; it runs as a rollback.
    set_pointer(config, "1.0.0", reason="checkout errors")
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (0, ["deployed"])
    rollback = journal(lab).deployments("lab")[0]
    assert (rollback.kind, rollback.version, rollback.status) == ("rollback", "1.0.0", "succeeded")
    assert fleet(lab) == all_serving(lab, "1.0.0")

    # A failing release: rolled back, published as failed with its exit code; not retried.
    set_pointer(config, "1.2.0-badhealth")
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (10, ["failed"])
    status = pointer_get(config)["status"]
    assert status["decision"] == "failed" and status["last_deployment"]["status"] == "rolled_back"
    assert status["running"] == "1.0.0" and fleet(lab) == all_serving(lab, "1.0.0")
    code, lines, _ = agent_once(config)
    assert code == 10 and "write the pointer again to retry" in lines[1]["reason"]
    assert len(journal(lab).deployments("lab")) == 3

    # A pointer value that is not a version is refused, nothing deployed.
    (lab.dir / "pointer" / "lab.json").write_text("1.1.0 && reboot\n")
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (1, ["refused"])
    assert "is not a valid version" in pointer_get(config)["status"]["reason"]

    # Drift: the pointer asks for 1.0.0, someone deploys 1.1.0 by hand; published, not corrected.
    set_pointer(config, "1.0.0", reason="back to the known good")
    assert agent_once(config)[0] == 0  # in sync
    assert deployer(config, "deploy", "--env", "lab", "--version", "1.1.0").returncode == 0
    code, lines, _ = agent_once(config)
    assert (code, decisions(lines)) == (1, ["drift"])
    status = pointer_get(config)["status"]
    assert status["decision"] == "drift" and status["running"] == "1.1.0"
    assert "not corrected" in status["reason"] and fleet(lab) == all_serving(lab, "1.1.0")


def test_an_agent_refuses_any_environment_but_its_own(make_lab: Callable[..., Lab]) -> None:
    lab = make_lab(nodes=1)
    # Started for another environment's name: its config holds only `lab`.
    r = deployer(lab.config_path, "agent", "--env", "prod", "--once")
    assert r.returncode == 2 and "no environment named 'prod' (known: lab)" in r.stderr
    # A config holding another environment besides its own (another one's credentials).
    data = yaml.safe_load(lab.config_path.read_text())
    data["environments"]["prod"] = data["environments"]["lab"]
    both = lab.dir / "both.yml"
    both.write_text(yaml.safe_dump(data))
    r = deployer(both, "agent", "--env", "lab", "--once")
    assert r.returncode == 2 and "holds only its own environment ('lab')" in r.stderr
    assert "'prod'" in r.stderr and "Traceback" not in r.stderr
    assert not (lab.dir / "pointer" / "lab.status.json").exists()  # nothing was done
