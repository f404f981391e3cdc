"""Labs own no fixed port unless asked: beside a lab holding every default port (the session's,
see ``default_ports`` in conftest.py, or a user's default lab), other labs come up on ports they
pick, record, keep and show; and a default-port lab comes up after them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab_specs import DefaultPorts, next_lab_spec

from deployer.lab._procs import ProcessRef, free_ports, wait_until
from deployer.lab._spec import DEFAULT_PORTS

pytestmark = pytest.mark.e2e

DEFAULT_ADDRESSES = set(DEFAULT_PORTS.values())


def deployer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def status_json(lab_dir: Path) -> dict[str, object]:
    done = deployer("lab", "status", "--json", "--dir", str(lab_dir))
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def bound(status: dict[str, object]) -> set[str]:
    """The ADDR:PORT of every service the lab's status names."""
    urls = [status[k] for k in ("frontend_url", "store_url", "metrics_url", "preview_url",
                                "prometheus_url")]
    return {str(u).split("//", 1)[1].split("/", 1)[0] for u in urls if u}


@pytest.fixture
def cli_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """``cli_lab(*flags)``: `deployer lab up --dir <temp> --net <free> *flags`, run as a user
    would; every such lab is brought down after the test."""
    made: list[Path] = []

    def up(*flags: str) -> Path:
        lab_dir = tmp_path_factory.mktemp("cli-lab")
        made.append(lab_dir)
        done = deployer("lab", "up", "--dir", str(lab_dir), "--net", next_lab_spec().net, *flags)
        assert done.returncode == 0, done.stdout + done.stderr
        return lab_dir

    yield up
    for lab_dir in made:
        deployer("lab", "down", "--dir", str(lab_dir))


def test_labs_come_up_beside_every_default_port_held_on_ports_they_pick_record_and_keep(
    default_ports: DefaultPorts, cli_lab: Callable[..., Path],
) -> None:
    assert default_ports.all_held(), "the session should hold every default port"
    lab_dir = cli_lab("--nodes", "1", "--legs", "--prometheus", "--seed", "1.0.0")

    status = status_json(lab_dir)
    assert status["healthy"] and status["prometheus_up"], status
    ports = bound(status)
    assert len(ports) == 5 and not ports & DEFAULT_ADDRESSES, ports
    state = json.loads((lab_dir / "lab.json").read_text())
    assert {state["spec"][f] for f in DEFAULT_PORTS} == ports
    table = deployer("lab", "status", "--dir", str(lab_dir)).stdout
    assert all(p in table for p in ports), table

    # A later `lab up` without port flags keeps them, and repairs a dead HAProxy on them.
    haproxy = ProcessRef.from_dict(state["haproxy"])
    os.kill(haproxy.pid, signal.SIGKILL)
    assert wait_until(lambda: not haproxy.alive(), timeout=10)
    again = deployer("lab", "up", "--dir", str(lab_dir), "--net", state["spec"]["net"], "--nodes", "1",
                     "--legs", "--prometheus", "--seed", "1.0.0")
    assert again.returncode == 0, again.stdout + again.stderr
    after = status_json(lab_dir)
    assert bound(after) == ports and after["healthy"], after
    assert json.loads((lab_dir / "lab.json").read_text())["haproxy"]["pid"] != haproxy.pid


def own_lab(cli_lab: Callable[..., Path]) -> Path:
    """`deployer lab up --dir X --net 127.0.N --frontend ... --store ...`: a lab of one's own,
    with its own ports for those two; it must hold none of the default ports."""
    own_ports = [f"127.0.0.1:{port}" for port in free_ports(2)]
    lab_dir = cli_lab("--nodes", "1", "--frontend", own_ports[0], "--store", own_ports[1])
    ports = bound(status_json(lab_dir))
    assert set(own_ports) < ports and not ports & DEFAULT_ADDRESSES, ports
    return lab_dir


def test_a_lab_on_its_own_dir_net_and_ports_holds_no_default_port(
    default_ports: DefaultPorts, cli_lab: Callable[..., Path],
) -> None:
    assert default_ports.all_held(), "the session should hold every default port"
    assert status_json(own_lab(cli_lab))["healthy"]


def test_a_lab_on_its_own_dir_net_and_ports_then_a_default_port_lab_both_up(
    default_ports: DefaultPorts, cli_lab: Callable[..., Path],
) -> None:
    if default_ports.lab is None:
        pytest.skip("no default-port lab of the suite's own to bring up again (held before the "
                    f"session, by a lab the suite must not touch: {default_ports.held_before or 'none'})")
    lab_dir = own_lab(cli_lab)
    # The default-port lab comes up while the other lab runs, on every default port.
    default_ports.lab.down()
    default_ports.up()
    default = default_ports.lab.status()
    assert default.healthy and default.prometheus_up
    assert bound(default.to_dict()) == DEFAULT_ADDRESSES
    assert status_json(lab_dir)["healthy"]
