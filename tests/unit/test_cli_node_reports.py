"""What the CLI prints about nodes, through its entry point with stdout and stderr captured (not a
terminal): whole table cells, the fix in the hint when the nodes could not download a release,
and a node a deployment left out of the load balancer. The runner is the seam faked here
(replayed events) and the load balancer a fake one; the config, the journal and the signed
releases in a file store are real."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import NODES

from deployer import load_config
from deployer.adapters.journal import Journal
from deployer.cli import _wiring
from deployer.cli.main import main
from deployer.testing import FakeLoadBalancer, ReplayRunner, RunScript, ev, stats, survey

Script = RunScript


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Script]], FakeLoadBalancer]:
    """``fleet(scripts)``: commands get a runner replaying ``scripts`` and a fake load balancer
    (returned: every server UP), instead of ansible-runner and HAProxy."""

    def make(scripts: list[Script]) -> FakeLoadBalancer:
        lb = FakeLoadBalancer("hello", NODES)
        monkeypatch.setattr(_wiring, "AnsibleRunner", lambda **_: ReplayRunner(scripts))
        monkeypatch.setattr(_wiring, "load_balancer_for", lambda env, **kw: lb)
        return lb

    return make


def run(
    capsys: pytest.CaptureFixture[str], config: Path, *args: str
) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of ``deployer ARGS --env lab --config CONFIG``."""
    with pytest.raises(SystemExit) as done:
        main([*args, "--env", "lab", "--config", str(config)])
    captured = capsys.readouterr()
    code = done.value.code
    return code if isinstance(code, int) else 1, captured.out, captured.err


def probe(detail: dict[str, str] | None = None) -> Script:
    """A probe.yml run: every node on 1.1.0, healthy unless ``detail`` says why not."""
    events = []
    for host in NODES:
        events.append(ev("ok", host, "deployer_release", "facts", facts={
            "deployer_release_current": "1.1.0", "deployer_release_previous": "1.0.0"}))
        why = (detail or {}).get(host)
        events.append(ev("ok", host, "deployer_smoke", "probe",
                         result={"healthy": why is None, "msg": why or "healthy"}))
    return ("probe.yml", [*events, stats(NODES)], "successful")


def with_store(world: dict[str, Path], **store: str) -> Path:
    """The world's config with fields of the environment's store section set."""
    data = yaml.safe_load(world["config"].read_text())
    data["environments"]["lab"]["store"].update(store)
    world["config"].write_text(yaml.safe_dump(data))
    return world["config"]


LONG_HEALTH = ("GET http://127.0.1.2:8000/health answered 503 after 10.0 s: {'status': 'starting', "
               "'checks': {'database': 'connecting to db1.internal:5432 (attempt 7 of 10)'}}")


def test_not_a_terminal_status_and_outcome_cells_are_whole(
    world: dict[str, Path], fleet: Callable[[list[Script]], FakeLoadBalancer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert len(LONG_HEALTH) > 80
    fleet([probe({"node2": LONG_HEALTH})])
    code, out, _ = run(capsys, world["config"], "status")
    assert code == 0, out
    [row] = [line for line in out.splitlines() if "node2" in line]
    assert LONG_HEALTH in row, out

    # A deployment's outcome table (on stderr): a pre-stage failure of more than 200 characters.
    why = "cannot stage release 1.1.0 in /opt/hello/releases/1.1.0: " + LONG_HEALTH + " " + "x" * 60
    fleet([survey(dict.fromkeys(NODES, "1.0.0"), failed=["node2"], extra=[
        ev("failed", "node2", "deployer_release", "stage", message=why)])])
    code, _, err = run(capsys, world["config"], "deploy", "--version", "1.1.0")
    assert code == 9, err  # refused: nothing changed
    [row] = [line for line in err.splitlines() if line.startswith("│ node2")]
    assert why in row, err


def test_a_download_the_nodes_could_not_make_is_reported_with_where_they_download_from(
    world: dict[str, Path], fleet: Callable[[list[Script]], FakeLoadBalancer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:8099/hello/1.1.0/hello-1.1.0.tar.gz"
    refused = f"cannot stage release 1.1.0: cannot download {url}: [Errno 111] Connection refused"
    failing = survey(dict.fromkeys(NODES, "1.0.0"), failed=["node1"], extra=[
        ev("failed", "node1", "deployer_release", "stage", message=refused)])

    config = with_store(world, node_url="http://127.0.0.1:8099")
    fleet([failing])
    code, _, err = run(capsys, config, "deploy", "--version", "1.1.0")
    assert code == 9, err
    assert f"deployer: error: pre-staging 1.1.0 failed (node1: {refused})" in err, err
    [hint] = [line for line in err.splitlines() if line.startswith("deployer: hint: ")]
    assert "store.node_url (http://127.0.0.1:8099)" in hint and "on node1" in hint, hint

    # Without store.node_url, the hint names the store's URL and the setting to add.
    config = with_store(world, node_url=None)  # type: ignore[arg-type]
    fleet([failing])
    code, _, err = run(capsys, config, "deploy", "--version", "1.1.0")
    assert code == 9, err
    [hint] = [line for line in err.splitlines() if line.startswith("deployer: hint: ")]
    assert "a file:// store" in hint and "set store.node_url to an HTTP(S) URL" in hint, hint


def test_status_names_a_node_a_deployment_left_out_and_fails(
    world: dict[str, Path], fleet: Callable[[list[Script]], FakeLoadBalancer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal = Journal(load_config(world["config"]).state_dir / "journal.sqlite")
    # Deployment 1 drained node2, failed to revert it and ended: node2 stays in MAINT.
    failed = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.2.0",
                                      command="deployer deploy")
    for phase in ("draining", "deploying", "smoke", "reverting", "failed"):
        journal.record_phase(failed, "node2", phase, from_version="1.1.0", to_version="1.2.0")
    journal.finish_deployment(failed, "failed", "1.2.0 failed on node2")

    lb = fleet([probe()])
    lb.admin["node2"] = "maint"
    lb.admin["node3"] = "maint"  # an operator's: no deployment took it out
    code, out, err = run(capsys, world["config"], "status")
    assert code == 1, err
    [node2] = [line for line in out.splitlines() if "node2" in line]
    assert "left out by deployment 1; run `deployer recover --env lab`" in node2, out
    [node3] = [line for line in out.splitlines() if "node3" in line]
    assert "MAINT" in node3 and "deployment" not in node3 and "recover" not in node3, out
    errors = [line for line in err.splitlines() if line.startswith("deployer: ")]
    assert errors == [
        "deployer: error: left out of the load balancer by a deployment that did not put it "
        "back: node2 (deployment 1)",
        "deployer: hint: run `deployer recover --env lab`: it puts back the nodes a deployment "
        "left out, once they are healthy",
    ], err

    fleet([probe()]).admin.update(node2="maint")
    code, out, _ = run(capsys, world["config"], "status", "--json")
    assert code == 1
    nodes = {n["node"]: n for n in json.loads(out)["nodes"]}
    assert nodes["node2"]["left_out_by"] == 1 and nodes["node1"]["left_out_by"] is None
    assert nodes["node2"]["detail"] == "left out by deployment 1; run `deployer recover --env lab`"

    # Back in service (recover did it): nothing to say, exit 0.
    fleet([probe()])
    code, out, err = run(capsys, world["config"], "status")
    assert code == 0 and "left out" not in out + err, out + err


def test_status_shows_a_node_a_running_deployment_has_out_without_failing(
    world: dict[str, Path], fleet: Callable[[list[Script]], FakeLoadBalancer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    journal = Journal(load_config(world["config"]).state_dir / "journal.sqlite")
    running = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.2.0",
                                       command="deployer deploy")  # this process: alive
    journal.record_phase(running, "node1", "draining", from_version="1.1.0", to_version="1.2.0")
    fleet([probe()]).admin.update(node1="drain")
    code, out, err = run(capsys, world["config"], "status")
    assert code == 0, err
    [node1] = [line for line in out.splitlines() if "node1" in line]
    assert f"out of the load balancer for deployment {running}, still running" in node1, out
