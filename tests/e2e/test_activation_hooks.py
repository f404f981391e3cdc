"""Activation hooks and the rollout's hot path, through the real CLI on the lab: a deployment
renders each node's service files before any node leaves the load balancer and, when no node
sets a hook, has no hook step at all; a hook an inventory sets on one node runs there, inside the
activation (a failing one sends the node back); a before-activate hook that changes the
application's environment is obeyed (the files are rendered after it); an environment that leaves
the hook steps out (extra_vars) has none, hooks set or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab

pytestmark = pytest.mark.e2e

Ssh = Callable[..., subprocess.CompletedProcess[str]]
HOOK_TASK = "Run the activation hook"
RENDER_TASK = "Render the release's program and environment files while the node still serves"
DRAIN_TASK = "Drain the node on every load balancer"


def deploy(the_lab: Lab, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", version,
         "--config", str(the_lab.config_path)],
        capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if k != "DEPLOYER_CONFIG"},
    )


def rollout_events(the_lab: Lab) -> list[dict[str, Any]]:
    """The job events of the latest run of rollout.yml, in order."""
    runs = []
    for run in (the_lab.dir / "state" / "runs").glob("run-*"):
        events = [json.loads(p.read_text()) for p in run.glob("artifacts/*/job_events/*.json")]
        if any(str((e.get("event_data") or {}).get("playbook", "")).endswith("rollout.yml")
               for e in events):
            runs.append((run.stat().st_mtime, events))
    assert runs, "no run of rollout.yml was kept"
    return sorted(max(runs, key=lambda r: r[0])[1], key=lambda e: int(e["counter"]))


def tasks_by_host(events: list[dict[str, Any]], prefix: str) -> dict[str, list[str]]:
    """Each host's results ("ok", "skipped", "failed") for the tasks named ``prefix...``."""
    seen: dict[str, list[str]] = {}
    for e in events:
        data = e.get("event_data") or {}
        if str(data.get("task", "")).startswith(prefix) and e["event"] in (
            "runner_on_ok", "runner_on_skipped", "runner_on_failed"
        ):
            seen.setdefault(str(data["host"]), []).append(e["event"].removeprefix("runner_on_"))
    return seen


def first_start(events: list[dict[str, Any]], host: str, prefix: str) -> int:
    return next(int(e["counter"]) for e in events if e["event"] == "runner_on_start"
                and (e.get("event_data") or {}).get("host") == host
                and str(e["event_data"].get("task", "")).startswith(prefix))


def set_host_vars(the_lab: Lab, host_vars: dict[str, dict[str, Any]],
                  group_vars: dict[str, Any] | None = None) -> None:
    inventory = yaml.safe_load(the_lab.inventory_path.read_text())
    group = inventory["all"]["children"]["hello_nodes"]
    for host, values in host_vars.items():
        group["hosts"][host].update(values)
    group["vars"].update(group_vars or {})
    the_lab.inventory_path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def serving(the_lab: Lab) -> dict[str, tuple[str | None, str | None]]:
    return {n.name: (n.app_version, n.lb_state) for n in the_lab.status().nodes}


def test_hooks_run_where_they_are_set_and_cost_nothing_where_none_is(
    make_lab: Callable[..., Lab], lab_ssh: Ssh, tmp_path: Path,
) -> None:
    the_lab = make_lab(nodes=3, seed="1.0.0")

    # No hook anywhere: no hook step in the rollout, every node's files rendered before the
    # first drain.
    r = deploy(the_lab, "1.1.0")
    assert r.returncode == 0, r.stderr
    events = rollout_events(the_lab)
    assert tasks_by_host(events, HOOK_TASK) == {}
    assert tasks_by_host(events, RENDER_TASK) == {n: ["ok"] for n in ("node1", "node2", "node3")}
    first_drain = min(first_start(events, n, DRAIN_TASK) for n in ("node1", "node2", "node3"))
    assert all(first_start(events, n, RENDER_TASK) < first_drain for n in ("node1", "node2", "node3"))
    assert serving(the_lab) == {n: ("1.1.0", "UP") for n in ("node1", "node2", "node3")}

    # A failing after-activate hook on node2 only: the steps are in the play for every node,
    # skipped where no hook is set; node2 goes back, node1 is rolled back, node3 untouched.
    failing = tmp_path / "failing-hook.yml"
    failing.write_text("- name: Fail as a broken hook would\n  ansible.builtin.fail:\n    msg: hook failed\n")
    set_host_vars(the_lab, {"node2": {"deployer_release_after_activate_hook": str(failing)}})
    r = deploy(the_lab, "1.0.0")
    assert r.returncode == 10, r.stderr
    assert "Traceback" not in r.stderr
    events = rollout_events(the_lab)
    assert tasks_by_host(events, HOOK_TASK) == {"node1": ["skipped", "skipped"],
                                                "node2": ["skipped", "ok"]}
    assert tasks_by_host(events, "Fail as a broken hook would") == {"node2": ["failed"]}
    assert serving(the_lab) == {n: ("1.1.0", "UP") for n in ("node1", "node2", "node3")}

    # A before-activate hook on every node that changes the application's environment: the
    # program file is rendered after it, so the change is in it.
    setting = tmp_path / "environment-hook.yml"
    setting.write_text(
        "- name: Set the environment as a team's hook would\n"
        "  ansible.builtin.set_fact:\n"
        "    deployer_release_environment:\n"
        "      HOOKED: \"{{ inventory_hostname }}\"\n"
    )
    set_host_vars(the_lab, {"node2": {"deployer_release_after_activate_hook": ""}},
                  {"deployer_release_before_activate_hook": str(setting)})
    r = deploy(the_lab, "1.0.0")
    assert r.returncode == 0, r.stderr
    for node in ("node1", "node2", "node3"):
        program = lab_ssh(the_lab, node, "cat /etc/supervisor/conf.d/hello.conf")
        assert program.returncode == 0, program.stderr
        assert f'HOOKED="{node}"' in program.stdout and 'APP_VERSION="1.0.0"' in program.stdout
    events = rollout_events(the_lab)
    assert tasks_by_host(events, RENDER_TASK) == {n: ["skipped"] for n in ("node1", "node2", "node3")}
    assert serving(the_lab) == {n: ("1.0.0", "UP") for n in ("node1", "node2", "node3")}

    # The hook steps left out by the environment's own word (extra_vars), a failing hook set on
    # node2 all the same: the rollout runs, with no hook step (one of its two batch plays runs,
    # whatever that extra var loads them with).
    config = yaml.safe_load(the_lab.config_path.read_text())
    config["environments"]["lab"].setdefault("extra_vars", {})["deployer_release_activation_hooks"] = False
    the_lab.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    set_host_vars(the_lab, {"node2": {"deployer_release_after_activate_hook": str(failing)}},
                  {"deployer_release_before_activate_hook": ""})
    r = deploy(the_lab, "1.1.0")
    assert r.returncode == 0, r.stderr
    events = rollout_events(the_lab)
    assert tasks_by_host(events, HOOK_TASK) == {}
    assert serving(the_lab) == {n: ("1.1.0", "UP") for n in ("node1", "node2", "node3")}
